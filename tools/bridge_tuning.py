"""Tune the offline label bridge (embedder/bridge.py) on a small labelled set of real photos and sounds.

Material (not reserved; conventions.md): Debian ``gcompris-qt-data`` 3.1-2 — public-domain / CC0 / CC-BY-SA
photos of animals, tools, household goods, renewable-energy plants and monuments, and GPL animal, instrument
and everyday sounds, packed in Qt ``.rcc`` archives (unpacked here with a 30-line reader). Labels come from the
file names; the queries are the concept names written in plain words. Also the dev set's 13 images and 14
text->image queries (eval/devset) for the text-weight experiment, with RapidOCR text as the items' text.

    python tools/bridge_tuning.py                    # apt-get download + unpack into /tmp/bridge-tuning
    python tools/bridge_tuning.py --gcompris DIR     # an already unpacked tree (…/gcompris/src/activities)

Metric: text query (e5 ``query:``) → rank of the first relevant item among all items of the experiment; MRR,
R@1, R@5 averaged over queries. Results of the run that set the shipped constants (2-core CPU, 2026-11-22):
see the table at the end of this file's output and the report in embedder/bridge.py's docstring.
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loupe.embedder import bridge  # noqa: E402
from loupe.embedder.audio_labels import SoundClassifier, log_mel, patches  # noqa: E402
from loupe.embedder.base import TextInput, l2_normalize  # noqa: E402
from loupe.embedder.bridge import aggregate_frames, bridge_mix, mix_with_text, softmax  # noqa: E402
from loupe.embedder.e5 import E5Embedder  # noqa: E402
from loupe.embedder.image_labels import ImageClassifier  # noqa: E402

# --- material ------------------------------------------------------------------------------------------------


def unpack_rcc(path: Path, out: Path) -> None:
    """Qt resource archive (format 1-3) → files; zlib-compressed entries inflated, zstd ones skipped."""
    b = path.read_bytes()
    if b[:4] != b"qres":
        raise ValueError(f"{path} is not a Qt .rcc file")
    ver, tree, data, names = struct.unpack(">IIII", b[4:20])
    size = 14 if ver == 1 else 22

    def name(off: int) -> str:
        o = names + off
        n = struct.unpack(">H", b[o : o + 2])[0]
        return b[o + 6 : o + 6 + 2 * n].decode("utf-16-be")

    def walk(i: int, prefix: Path) -> None:
        o = tree + i * size
        noff, flags = struct.unpack(">IH", b[o : o + 6])
        nm = name(noff) if i else ""
        if flags & 2:
            count, first = struct.unpack(">II", b[o + 6 : o + 14])
            for c in range(first, first + count):
                walk(c, prefix / nm if nm else prefix)
            return
        doff = struct.unpack(">I", b[o + 10 : o + 14])[0]
        p = data + doff
        raw = b[p + 4 : p + 4 + struct.unpack(">I", b[p : p + 4])[0]]
        if flags & 4:
            return
        if flags & 1:
            raw = zlib.decompress(raw[4:])
        dest = out / prefix / nm
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(raw)

    walk(0, Path())


def fetch_gcompris(work: Path) -> Path:
    """Download gcompris-qt-data with apt-get and unpack the .rcc archives the experiments use."""
    acts = work / "gcompris" / "src" / "activities"
    if acts.is_dir():
        return acts
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", "gcompris-qt-data"], cwd=work, check=True)
    deb = next(work.glob("gcompris-qt-data_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "deb")], check=True)
    rcc = work / "deb" / "usr" / "share" / "gcompris-qt" / "rcc"
    for n in ("explore_farm_animals", "explore_world_animals", "erase", "lang", "categorization", "instruments"):
        unpack_rcc(rcc / f"{n}.rcc", work)
    unpack_rcc(rcc / "memory-sound.rcc", work)
    return acts


def concept_of(stem: str) -> str | None:
    """A photo's concept in plain words from its file name (None: leave the file out)."""
    s = re.sub(r"\d+$", "", stem)
    fixed = {
        "dragon": "Komodo dragon", "polar_bear": "polar bear", "scarlet_macaw": "scarlet macaw", "camels": "camel",
        "chamaeleon": "chameleon", "flying_fox": "flying fox bat", "kitten": "cat", "long_nosed_monkey":
        "proboscis monkey", "meerkats": "meerkat", "northern_harrier": "harrier hawk", "nubian_ibex": "ibex",
        "red_panda": "red panda", "spoonbills": "spoonbill", "swans": "swan", "gosling": "goose", "flies": "fly",
        "screwDriver": "screwdriver", "measuringTape": "measuring tape", "tweezer": "tweezers", "plier": "pliers",
        "nailCutter": "nail clipper", "sideCutter": "wire cutter", "multimeter": "multimeter", "spray": "spray can",
        "scissors": "scissors", "blackslate": "blackboard", "bulb": "light bulb", "weighingMachine": "weighing scale",
        "erasers": "eraser", "spoons": "spoons", "pan": "frying pan", "knife": "cutlery", "dam": "dam",
        "geothermal": "geothermal power plant", "windmill": "windmill", "fish": "fish", "calf": "calf",
        "IndiaGate": "India Gate", "arcDeTriomphe": "Arc de Triomphe", "brandenburgGate": "Brandenburg Gate",
        "burj": "Burj Khalifa", "christTheRedeemer": "Christ the Redeemer statue", "eiffelTower": "Eiffel Tower",
        "empireState": "Empire State Building", "greatPyramid": "Great Pyramid of Giza", "greatWall":
        "Great Wall of China", "leaningTowerOfPisa": "Leaning Tower of Pisa", "mountRushmore": "Mount Rushmore",
        "operaHouse": "Sydney Opera House", "statueOfLiberty": "Statue of Liberty", "tajMahal": "Taj Mahal",
        "usCapitol": "United States Capitol", "colosseum": "Colosseum", "parthenon": "Parthenon",
        "cathedral": "cathedral",
    }  # fmt: skip
    skip = {"buffetset", "cuttingTool", "monument", "bayterek", "jucheTower", "kutubMinar", "leMusee",
            "victoriaMemorial", "zimniPalace", "igloo"}  # fmt: skip
    if s in skip:
        return None
    if s == "solar":
        return "solar cooker" if stem in ("solar1", "solar2") else "solar panels"
    return fixed.get(s, s.replace("_", " "))


LANG_WORDS = set(
    "giraffe sheep wolf camel melon bull raspberry owl orange hippopotamus chicken lemon spider peach butterfly "
    "strawberry pear coconut dog gorilla plum fox mosquito flies rhinoceros kangaroo turkey lizard horse beetle "
    "snail bee apricot whale cat frog dolphin mouse duck rabbit panda cow hedgehog bear shark apple kiwi snake "
    "turtle pig".split()
)


def photo_set(acts: Path) -> list[tuple[Path, str]]:
    """(photo, concept) pairs: ~230 photos of ~150 concepts."""
    out: list[tuple[Path, str]] = []
    dirs = [
        "explore_farm_animals/resource/animals", "explore_world_animals/resource/animals", "erase/resource",
        "categorization/resource/images/tools", "categorization/resource/images/others",
        "categorization/resource/images/renewable", "categorization/resource/images/fishes",
        "categorization/resource/images/monuments",
    ]  # fmt: skip
    for d in dirs:
        for p in sorted((acts / d).glob("*.webp")):
            c = concept_of(p.stem)
            if c and not (d.endswith("fishes") and int(re.sub(r"\D", "", p.stem) or 0) > 8):
                out.append((p, c))
    for p in sorted((acts / "lang/resource/words_sample").glob("*.webp")):
        if p.stem in LANG_WORDS:
            out.append((p, concept_of(p.stem) or p.stem))
    return out


def credit_captions(acts: Path) -> dict[str, str]:
    """File name → "Photo: <author>, <licence>" from the gcompris README files (a realistic, uninformative text)."""
    caps: dict[str, str] = {}
    for readme in acts.glob("**/README"):
        for block in readme.read_text(errors="replace").split("\n\n"):
            m_c = re.search(r"Copyright:\s*(.+)", block)
            m_l = re.search(r"License:\s*(.+)", block)
            files = block.split("Files:")[-1].split() if "Files:" in block else []
            for f in files:
                if m_c:
                    caps[f] = f"Photo: {m_c.group(1).strip()}, {m_l.group(1).strip() if m_l else ''}".strip(", ")
    return caps


SOUND_QUERIES = {
    "explore_farm_animals/resource/animals/cat.ogg": "a cat meowing",
    "explore_farm_animals/resource/animals/chickens.ogg": "hens clucking",
    "explore_farm_animals/resource/animals/cow.ogg": "a cow mooing",
    "explore_farm_animals/resource/animals/dog.ogg": "a dog barking",
    "explore_farm_animals/resource/animals/duck.ogg": "a duck quacking",
    "explore_farm_animals/resource/animals/horse.ogg": "a horse neighing",
    "explore_farm_animals/resource/animals/owl.ogg": "an owl hooting at night",
    "explore_farm_animals/resource/animals/pig.ogg": "a pig grunting",
    "explore_farm_animals/resource/animals/sheep.ogg": "sheep bleating",
    "memory-sound/resource/LRBark_1_LA_cut.ogg": "a dog barking",
    "memory-sound/resource/LRBark_3_LA_cut.ogg": "a dog barking",
    "memory-sound/resource/LRApplauses_1_LA_cut.ogg": "an audience applauding",
    "memory-sound/resource/LRBuddhist_gong_05_LA.ogg": "a gong being struck",
    "memory-sound/resource/LRDoor_Open_2_LA.ogg": "a door opening",
    "memory-sound/resource/LRFrogsInPondDuringStormLACut.ogg": "frogs croaking in a pond",
    "memory-sound/resource/LRHeart_beat_01_LA.ogg": "a heartbeat",
    "memory-sound/resource/LRRain_in_garden_01_LA_cut.ogg": "rain falling in a garden",
    "memory-sound/resource/LRStartAndStopCarEngine1LACut.ogg": "a car engine starting",
    "memory-sound/resource/LRTrain_slowing_down_01_LA_cut.ogg": "a train slowing down",
    "memory-sound/resource/LRObject_falling_01_LA.ogg": "something falling on the floor",
    "memory-sound/resource/LRFactory_noise_01_LA.ogg": "machines in a factory",
    "memory-sound/resource/LRFactory_noise_02_LA.ogg": "machines in a factory",
}
INSTRUMENTS = {
    "banjo": "a banjo", "flute_traversiere": "a flute", "bongo": "bongo drums", "harp": "a harp",
    "tambourine": "a tambourine", "cymbal": "a cymbal crash", "cello": "a cello", "harmonica": "a harmonica",
    "horn": "a French horn", "trumpet": "a trumpet", "piano": "a piano", "guitar": "an acoustic guitar",
    "tuba": "a tuba", "drum_kit": "a drum kit", "trombone": "a trombone", "castanets": "castanets",
    "clarinet": "a clarinet", "violin": "a violin", "accordion": "an accordion",
    "electric_guitar": "an electric guitar", "maracas": "maracas", "organ": "a church organ",
    "triangle": "a triangle (percussion)", "timpani": "timpani drums", "snare_drum": "a snare drum",
    "saxophone": "a saxophone",
}  # fmt: skip


# --- scoring ---------------------------------------------------------------------------------------------------


def score(q: np.ndarray, items: np.ndarray, relevant: Sequence[set[int]]) -> dict[str, float]:
    """MRR, R@1, R@5 of unit query vectors over unit item vectors."""
    sims = q @ items.T
    rr, r1, r5 = [], [], []
    for i, rel in enumerate(relevant):
        order = np.argsort(-sims[i])
        rank = next(r for r, j in enumerate(order) if j in rel) + 1
        rr.append(1.0 / rank)
        r1.append(rank <= 1)
        r5.append(rank <= 5)
    return {"mrr": float(np.mean(rr)), "r1": float(np.mean(r1)), "r5": float(np.mean(r5)), "n": len(relevant)}


def fmt(s: dict[str, float]) -> str:
    return f"MRR {s['mrr']:.3f}  R@1 {s['r1']:.3f}  R@5 {s['r5']:.3f}  (n={s['n']})"


class TemplateBank:
    """e5 passage embeddings of class names per template, computed once and kept in the work dir."""

    def __init__(self, e5: E5Embedder, work: Path, vocab: str, names: list[str]) -> None:
        self.e5, self.work, self.vocab, self.names = e5, work, vocab, names
        self.mem: dict[str, np.ndarray] = {}

    def get(self, template: str) -> np.ndarray:
        if template not in self.mem:
            import hashlib

            f = self.work / f"{self.vocab}-{hashlib.sha1(template.encode()).hexdigest()[:10]}.npy"
            if f.exists():
                self.mem[template] = np.load(f)
            else:
                t0 = time.time()
                texts = [template.format(n) for n in self.names]
                self.mem[template] = self.e5.embed([TextInput(t) for t in texts])
                print(f"  embedded {len(texts)} {self.vocab} names with {template!r} in {time.time() - t0:.1f} s")
                np.save(f, self.mem[template])
        return self.mem[template]

    def classes(self, templates: Sequence[str]) -> np.ndarray:
        return l2_normalize(np.mean([self.get(t) for t in templates], axis=0))


IK, IT = bridge.IMAGE_TOP_K, bridge.IMAGE_TEMPERATURE
AK, AT = bridge.AUDIO_TOP_K, bridge.AUDIO_TEMPERATURE
TEMPERATURES = (0.5, 1.0, 2.0, 3.0, 5.0)
IMAGE_TEMPLATE_SETS = {
    "bare": ["{}"],
    "photo": ["a photo of a {}."],
    "4 templates": ["a photo of a {}.", "a picture of a {}.", "an image showing a {}.", "{}"],
    "7 templates": ["a photo of a {}.", "a picture of a {}.", "an image showing a {}.", "{}",
                    "a close-up photo of the {}.", "a blurry photo of a {}.", "a drawing of a {}."],
}  # fmt: skip
AUDIO_TEMPLATE_SETS = {
    "bare": ["{}"],
    "sound of": ["the sound of {}."],
    "3 templates": ["the sound of {}.", "a recording of {}.", "{}"],
    "5 templates": ["the sound of {}.", "a recording of {}.", "{}", "an audio clip of {}.", "you can hear {}."],
}


# --- experiments ----------------------------------------------------------------------------------------------


def image_experiments(acts: Path, work: Path, e5: E5Embedder) -> None:
    photos = photo_set(acts)
    concepts = sorted({c for _, c in photos})
    relevant = [{i for i, (_, c) in enumerate(photos) if c == q} for q in concepts]
    qv = e5.embed([TextInput(c) for c in concepts], role="query")
    print(f"\n== images: {len(photos)} photos, {len(concepts)} concept queries")
    clf: dict[str, ImageClassifier] = {f: ImageClassifier(fit=f) for f in ("pad", "crop", "squash")}
    logits: dict[str, np.ndarray] = {}
    feats: dict[str, np.ndarray] = {}
    for fit, c in clf.items():
        cached = work / f"photos-{fit}-{len(photos)}.npz"
        if cached.exists():
            z = np.load(cached)
            logits[fit], feats[fit] = z["logits"], z["feats"]
            continue
        t0 = time.time()
        logits[fit], feats[fit] = c.run([str(p) for p, _ in photos])
        print(f"  classifier fit={fit}: {(time.time() - t0) / len(photos) * 1000:.0f} ms/image (batches of 16)")
        np.savez(cached, logits=logits[fit], feats=feats[fit])
    bank = TemplateBank(e5, work, "imagenet", clf["pad"].class_names)
    probs = softmax(logits["pad"])
    print(f"  templates (k={IK}, T={IT}):")
    for name, ts in IMAGE_TEMPLATE_SETS.items():
        print(f"    {name:12s} {fmt(score(qv, bridge_mix(probs, bank.classes(ts), IK, IT), relevant))}")
    cls = bank.classes(bridge.IMAGE_TEMPLATES)
    print("  k x T (shipped templates):")
    for k in (1, 3, 5, 10, 20, 50):
        row = [f"T={t}: {score(qv, bridge_mix(probs, cls, k, t), relevant)['mrr']:.3f}" for t in TEMPERATURES]
        print(f"    k={k:3d}  MRR " + "  ".join(row))
    print(f"  fit (k={IK}, T={IT}, shipped templates):")
    for fit in clf:
        print(f"    {fit:7s} {fmt(score(qv, bridge_mix(softmax(logits[fit]), cls, IK, IT), relevant))}")
    # The visual vector: same-concept photos should be neighbours (image→image, leave-one-out).
    f = l2_normalize(feats["pad"])
    b = bridge_mix(probs, cls, IK, IT)
    for label, v in (("visual features", f), ("unified bridge", b)):
        multi = [i for i, r in enumerate(relevant) if len(r) > 1]
        rr = []
        for qi in multi:
            for i in relevant[qi]:
                sims = v @ v[i]
                sims[i] = -np.inf
                rank = int(np.sum(sims > max(sims[j] for j in relevant[qi] if j != i))) + 1
                rr.append(1.0 / rank)
        print(f"  image→image ({label}): MRR {np.mean(rr):.3f} over {len(rr)} photos with a same-concept partner")

    text_weight_experiment(acts, work, e5, photos, probs, cls, concepts, relevant, qv)
    video_experiment(work, photos, concepts, relevant, qv, clf["pad"], cls)


def text_weight_experiment(
    acts: Path,
    work: Path,
    e5: E5Embedder,
    photos: list[tuple[Path, str]],
    probs: np.ndarray,
    cls: np.ndarray,
    concepts: list[str],
    relevant: list[set[int]],
    qv: np.ndarray,
) -> None:
    """A: dev-set figures with their OCR text; B: photos with a credit-line caption. Both in one pool."""
    dev = ROOT / "eval" / "devset"
    queries = [json.loads(line) for line in (dev / "queries.jsonl").read_text().splitlines() if line.strip()]
    queries = [q for q in queries if q["modality"] == "text->image"]
    dev_imgs = sorted(
        {q["target_file"] for q in queries}
        | {str(p.relative_to(dev)) for p in (dev / "corpus" / "images").glob("*.png")}
    )
    ocr_cache = work / "devset-ocr.json"
    if ocr_cache.exists():
        ocr = json.loads(ocr_cache.read_text())
    else:
        from rapidocr import RapidOCR

        engine = RapidOCR()
        ocr = {}
        for f in dev_imgs:
            r = engine(str(dev / f))
            ocr[f] = " ".join(getattr(r, "txts", None) or ())
        ocr_cache.write_text(json.dumps(ocr))
    clf = ImageClassifier()
    dl, _ = clf.run([str(dev / f) for f in dev_imgs])
    dev_bridge = bridge_mix(softmax(dl), cls, IK, IT)
    dev_text = e5.embed([TextInput(ocr[f] or " ") for f in dev_imgs])
    dev_text[[i for i, f in enumerate(dev_imgs) if not ocr[f].strip()]] = 0
    caps = credit_captions(acts)
    cap_texts = [caps.get(p.name, "") for p, _ in photos]
    ph_text = np.zeros((len(photos), e5.dim), dtype=np.float32)
    idx = [i for i, t in enumerate(cap_texts) if t]
    ph_text[idx] = e5.embed([TextInput(cap_texts[i]) for i in idx])
    ph_bridge = bridge_mix(probs, cls, IK, IT)
    dq = e5.embed([TextInput(q["query_text"]) for q in queries], role="query")
    drel = [{len(photos) + dev_imgs.index(q["target_file"])} for q in queries]
    print(f"\n== text weight: {len(queries)} dev-set queries over {len(dev_imgs)} figures with OCR text "
          f"(A) and {len(concepts)} concept queries over {len(photos)} photos with credit captions "
          f"({len(idx)} have one) (B), one pool")  # fmt: skip
    for w in (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0):
        items = np.vstack([mix_with_text(ph_bridge, ph_text, w), mix_with_text(dev_bridge, dev_text, w)])
        if w == 1.0:  # text only (the OCR/caption baseline); items without text keep their bridge vector
            items = np.vstack([np.where(ph_text.any(1, keepdims=True), ph_text, ph_bridge),
                               np.where(dev_text.any(1, keepdims=True), dev_text, dev_bridge)])  # fmt: skip
        a = score(dq, items, drel)
        b = score(qv, items, relevant)
        print(f"    w={w:.1f}  A {fmt(a)}   B {fmt(b)}   mean MRR {(a['mrr'] + b['mrr']) / 2:.3f}")


def video_experiment(
    work: Path,
    photos: list[tuple[Path, str]],
    concepts: list[str],
    relevant: list[set[int]],
    qv: np.ndarray,
    clf: ImageClassifier,
    cls: np.ndarray,
) -> None:
    """Synthetic windows: 2 crops of a photo + a heavily blurred frame + a dark noisy frame (a cut/fade)."""
    from PIL import Image, ImageFilter

    folder = work / "video-frames"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    windows: list[list[str]] = []
    for i, (p, _) in enumerate(photos):
        img = Image.open(p).convert("RGB")
        w, h = img.size
        frames = []
        for j, (x0, y0) in enumerate(((0.0, 0.0), (0.15, 0.1))):
            crop = img.crop((int(x0 * w), int(y0 * h), int(x0 * w + 0.85 * w), int(y0 * h + 0.85 * h)))
            frames.append(folder / f"{i:04d}-{j}.jpg")
            crop.save(frames[-1], quality=85)
        frames.append(folder / f"{i:04d}-blur.jpg")
        img.filter(ImageFilter.GaussianBlur(radius=max(w, h) / 20)).save(frames[-1], quality=85)
        dark = (rng.random((h // 4, w // 4, 3)) * 40).astype(np.uint8)
        frames.append(folder / f"{i:04d}-dark.jpg")
        Image.fromarray(dark).resize((w, h)).save(frames[-1], quality=85)
        windows.append([str(f) for f in frames])
    flat = [f for w in windows for f in w]
    logits, _ = clf.run(flat)
    probs = softmax(logits)
    fv = bridge_mix(probs, cls, IK, IT)
    conf = probs.max(axis=1)
    print(f"\n== video windows: {len(windows)} synthetic windows of 4 frames (2 views, 1 blurred, 1 dark)")
    for how in ("mean", "confidence"):
        items = np.stack(
            [aggregate_frames(fv[4 * i : 4 * i + 4], conf[4 * i : 4 * i + 4], how) for i in range(len(windows))]
        )
        print(f"    {how:10s} {fmt(score(qv, items, relevant))}")
    best = np.stack([fv[4 * i + int(np.argmax(conf[4 * i : 4 * i + 4]))] for i in range(len(windows))])
    print(f"    {'max-conf':10s} {fmt(score(qv, best, relevant))}")
    clean = np.stack([aggregate_frames(fv[4 * i : 4 * i + 2], None, "mean") for i in range(len(windows))])
    print(f"    {'2 clean':10s} {fmt(score(qv, clean, relevant))}   (upper reference: the two clean views only)")


def audio_experiments(acts: Path, work: Path, e5: E5Embedder) -> None:
    import soundfile

    clips: dict[str, str] = dict(SOUND_QUERIES)
    for stem, q in INSTRUMENTS.items():
        clips[f"instruments/resource/{stem}.ogg"] = q
    files = [f for f in clips if (acts / f).exists()]
    queries = sorted({clips[f] for f in files})
    relevant = [{i for i, f in enumerate(files) if clips[f] == q} for q in queries]
    qv = e5.embed([TextInput(q) for q in queries], role="query")
    sc = SoundClassifier()
    per_patch = []
    seconds = 0.0
    t0 = time.time()
    for f in files:
        data, rate = soundfile.read(str(acts / f), dtype="float32", always_2d=True)
        from loupe.embedder.audio_labels import resample

        x = resample(data.mean(axis=1), rate)
        seconds += x.size / 16000
        per_patch.append(sc._patch_outputs(patches(log_mel(x))))
    dt = time.time() - t0
    print(f"\n== audio: {len(files)} clips ({seconds:.0f} s), {len(queries)} queries; YAMNet "
          f"{dt / seconds * 1000:.1f} ms per audio second incl. decode+front end")  # fmt: skip
    bank = TemplateBank(e5, work, "audioset", sc.class_names)
    mean_p = np.stack([p.mean(axis=0) for p, _ in per_patch])
    max_p = np.stack([p.max(axis=0) for p, _ in per_patch])
    print(f"  templates (k={AK}, T={AT}, mean pooling):")
    for name, ts in AUDIO_TEMPLATE_SETS.items():
        print(f"    {name:12s} {fmt(score(qv, bridge_mix(mean_p, bank.classes(ts), AK, AT), relevant))}")
    cls = bank.classes(bridge.AUDIO_TEMPLATES)
    print("  k x T (shipped templates, mean pooling):")
    for k in (1, 3, 5, 10, 20, 50):
        row = [f"T={t}: {score(qv, bridge_mix(mean_p, cls, k, t), relevant)['mrr']:.3f}" for t in TEMPERATURES]
        print(f"    k={k:3d}  MRR " + "  ".join(row))
    print("  k x T (shipped templates, max pooling over patches):")
    for k in (5, 10, 20, 50):
        row = [f"T={t}: {score(qv, bridge_mix(max_p, cls, k, t), relevant)['mrr']:.3f}" for t in TEMPERATURES]
        print(f"    k={k:3d}  MRR " + "  ".join(row))
    emb = l2_normalize(np.stack([e.mean(axis=0) for _, e in per_patch]))
    logit_vec = l2_normalize(mean_p)
    for label, v in (("YAMNet embedding", emb), ("pooled posteriors", logit_vec)):
        rr = []
        for rel in relevant:
            if len(rel) < 2:
                continue
            for i in rel:
                sims = v @ v[i]
                sims[i] = -np.inf
                rank = int(np.sum(sims > max(sims[j] for j in rel if j != i))) + 1
                rr.append(1.0 / rank)
        print(f"  audio→audio ({label}): MRR {np.mean(rr):.3f} over {len(rr)} clips with a same-label partner")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gcompris", type=Path, help="unpacked …/gcompris/src/activities (default: download)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bridge-tuning")
    ap.add_argument("--only", choices=["image", "audio"])
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    acts = args.gcompris or fetch_gcompris(args.work)
    e5 = E5Embedder()
    if args.only != "audio":
        image_experiments(acts, args.work, e5)
    if args.only != "image":
        audio_experiments(acts, args.work, e5)


if __name__ == "__main__":
    main()
