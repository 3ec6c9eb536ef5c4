"""Generate Loupe's sample corpus: the fictional archive of the Saltmere Harbour Authority.

Why one file of ~850 lines: most of it is the sample corpus's fictional prose and drawing instructions, data
that reads best next to the code that writes each file.

Every file under the output folder (default ``sample``) is written from scratch by this script, with fixed
metadata and timestamps, so running it twice gives the same bytes. All prose is original and fictional; any
resemblance to a real port, person or company is accidental. ``docs/sample-queries.md`` lists example queries and
the file and page each one should find.

Usage::

    python tools/make_sample.py [OUTPUT_DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import re
import subprocess
import wave
import zipfile
from pathlib import Path

import docx
import numpy as np
import openpyxl
import pymupdf
from docx.shared import Pt
from openpyxl.styles import Font
from PIL import Image, ImageDraw, ImageFont
from pptx import Presentation
from pptx.util import Inches
from pptx.util import Pt as PptPt

FIXED = dt.datetime(2026, 1, 15, 9, 0, 0)
ZIP_TIME = (2026, 1, 15, 9, 0, 0)
ORG = "Saltmere Harbour Authority"

# ---------------------------------------------------------------------------------------------------------
# PDFs
# ---------------------------------------------------------------------------------------------------------

# One (heading, [paragraphs]) per page.
ANNUAL_REPORT: list[tuple[str, list[str]]] = [
    (
        "Annual Report 2025",
        [
            "Saltmere Harbour Authority - a public trust port serving the town of Saltmere, the Ostholm island "
            "ferries and the fishing fleets of the Vellan estuary.",
            "Foreword from the Chair, Margit Ellery. The year 2025 was the authority's hundred and twelfth year of "
            "operation and, by most measures, its busiest. We completed the deepening of the North Channel on "
            "budget, commissioned two new ship-to-shore cranes at Pier Four, and connected the first cruise berth "
            "to shore power. We also faced Storm Orla in November, which tested our people and our breakwaters "
            "and is described in a separate incident report.",
            "This report is arranged by theme, one topic per page: traffic, the North Channel dredging campaign, "
            "energy and emissions, the container terminal's crane fleet, and finally our people and finances. "
            "All figures are for the calendar year ending 31 December 2025 unless stated otherwise.",
        ],
    ),
    (
        "Traffic and Cargo Volumes",
        [
            "The harbour recorded 4,812 commercial vessel calls in 2025, up from 4,530 the year before. Container "
            "throughput at Pier Four reached 1.37 million TEU, a record, while dry bulk through the Granary Wharf "
            "fell by nine per cent to 2.1 million tonnes after the closure of the Harrowfield maltings.",
            "The Ostholm ferry route carried 911,000 passengers and 204,000 cars. The summer timetable added a "
            "fourth daily crossing on the fast craft Selkie Star, which cut the average waiting time at the "
            "Ostholm Quay vehicle lanes from forty minutes to under fifteen.",
            "Cruise tourism continued to recover: 61 cruise calls brought roughly 118,000 visitors ashore, the "
            "largest ship of the season being the 294-metre Aurora Meridian on 9 July. Local traders on Chandlers "
            "Row reported their strongest August since the market was pedestrianised.",
        ],
    ),
    (
        "Dredging the North Channel",
        [
            "The capital dredging campaign in the North Channel ran from 3 February to 28 June 2025. The contractor, "
            "Brandvik Marine Works, used the trailing suction hopper dredger Grey Heron and a backhoe pontoon to "
            "deepen the 4.3-kilometre approach from 11.2 metres to 13.5 metres below chart datum.",
            "In total about 820,000 cubic metres of sand and silt were removed. Clean sand was placed on Marram "
            "Beach to rebuild the dunes lost in earlier winters, and the finer silt was taken to the licensed "
            "Gullbank offshore disposal site, eleven nautical miles to the north-east.",
            "Because the channel borders the Tansy Flats seagrass meadow, a turbidity buoy network of six "
            "stations was kept in place throughout the works. Dredging paused on four occasions when suspended "
            "sediment exceeded the 25 mg/l trigger level. The final contract value was 14.8 million euros, 0.3 "
            "million below the approved budget.",
        ],
    ),
    (
        "Energy, Shore Power and Emissions",
        [
            "Berth 7 on the Cruise Quay now supplies shore power at 6.6 kilovolts and up to 12 megawatts, allowing "
            "cruise ships to switch off their auxiliary engines while alongside. Twenty-three of the 61 cruise "
            "calls plugged in during the first season, avoiding an estimated 3,400 tonnes of carbon dioxide.",
            "The pilot service took delivery of Tern, a fully electric pilot boat built at the Ferrow yard. Tern "
            "charges from a dedicated 350 kW charger at the Pilot House pontoon and completes around fourteen "
            "transfers per shift before it needs topping up.",
            "Across the estate, the authority's own scope 1 and 2 emissions fell to 6,920 tonnes CO2-equivalent, "
            "a reduction of eighteen per cent on 2024. LED floodlighting on Yard B and a heat pump for the "
            "Harbour Master's office accounted for most of the saving on land.",
        ],
    ),
    (
        "The Container Terminal Crane Fleet",
        [
            "Pier Four Container Terminal operates nine ship-to-shore gantry cranes, numbered STS-01 to STS-09. "
            "The two newest, STS-08 and STS-09, were supplied by Halvorsen Lift and entered service in April. "
            "With an outreach of 22 container rows and a lift height of 46 metres, they can work the largest "
            "vessels that now reach the berth through the deepened North Channel.",
            "Average crane productivity reached 31.4 moves per hour, against 28.9 in 2024. Remote operation was "
            "introduced on STS-08 and STS-09: drivers now work from a control room in the terminal building rather "
            "than from cabins forty metres up, which the crews describe as quieter and far less tiring.",
            "The older cranes STS-01 and STS-02, in service since 1998, will be retired in 2027. STS-08 was out of "
            "service for eleven days in September after a hoist gearbox bearing failed; the manufacturer replaced "
            "the gearbox under warranty.",
        ],
    ),
    (
        "People, Finances and Outlook",
        [
            "At year end the authority employed 642 people, including 38 marine pilots and 27 apprentices. The "
            "apprenticeship scheme, run with Saltmere Technical College, added a new marine electrician track this "
            "year. The lost-time injury rate fell to 1.2 per million hours worked.",
            "Operating revenue was 118.6 million euros and operating profit 21.3 million euros. Capital spending "
            "of 47.9 million euros went mainly to the North Channel, the two new cranes and the shore power "
            "installation. Net debt stood at 96 million euros at the end of December.",
            "For 2026 the board has approved the redevelopment of Ostholm Quay ferry terminal, a study into a "
            "second shore power berth, and the repair of the West Mole breakwater damaged in Storm Orla.",
        ],
    ),
]

STORM_REPORT: list[tuple[str, list[str]]] = [
    (
        "Storm Orla Incident Report: Summary and Timeline",
        [
            "Report reference SHA-IR-2025-017, prepared by the Harbour Master's Office, Captain Idris Okonjo. It "
            "covers the passage of Storm Orla over Saltmere on the night of 14 to 15 November 2025.",
            "The storm deepened rapidly west of the Vellan estuary. The anemometer on Beacon Point lighthouse "
            "recorded a peak gust of 41 metres per second at 23:52, and the tide gauge at the Inner Basin showed "
            "a surge of 1.9 metres above the predicted level, coinciding with a spring high tide at 01:10.",
            "Timeline: at 14:00 the port moved to storm readiness level amber; at 18:40 the harbour was closed to "
            "all arrivals and departures; at 21:15 the container cranes at Pier Four were pinned and tied down; "
            "at 06:30 on 15 November the first survey launch went out, and the port reopened at 13:00 after the "
            "channel buoys had been checked.",
        ],
    ),
    (
        "Damage Assessment",
        [
            "The most serious damage was to the West Mole breakwater, where roughly 60 metres of rock armour were "
            "displaced along the seaward face and the parapet wall cracked in two places. The mole remained "
            "standing but the navigation light at its head was lost and has been replaced by a temporary buoy.",
            "In the Fishermen's Basin, pontoon C tore free of two piles and drifted against the slipway, damaging "
            "nine small boats. Three larger vessels broke one or more mooring lines at the Granary Wharf. On Yard B, "
            "a stack of fourteen empty containers toppled in the wind; no laden boxes were affected.",
            "Nobody was seriously hurt. One crew member of the tug Kestrel was treated for mild hypothermia after "
            "being soaked while securing a drifting barge. The preliminary repair estimate is 3.2 million euros, "
            "of which 2.6 million relates to the West Mole.",
        ],
    ),
    (
        "Lessons Learned and Recommendations",
        [
            "The review found that the storm warning procedure worked well but that mooring checks started too "
            "late: most lines parted before 22:00, while the first mooring patrol began at 21:30. Patrols should "
            "begin as soon as readiness level amber is declared.",
            "Recommendation 1: empty containers on Yard B are to be stacked no higher than three tiers whenever "
            "forecast gusts exceed 25 metres per second. Recommendation 2: crane tie-down is to be triggered "
            "automatically when the mean wind speed at the crane reaches 20 metres per second for ten minutes.",
            "Recommendation 3: pontoon C is to be rebuilt with heavier piles and guides rated for a 2-metre surge. "
            "Recommendation 4: a permanent backup light should be installed on the West Mole head. The Harbour "
            "Master will report progress on all four recommendations to the board in March 2026.",
        ],
    ),
]


def _write_pdf(path: Path, title: str, header: str, pages: list[tuple[str, list[str]]]) -> None:
    """Write a text PDF on A4: a header line, a heading and paragraphs per page, and a page footer."""
    doc = pymupdf.open()
    width, height = pymupdf.paper_size("a4")
    margin = 56.0
    for number, (heading, paragraphs) in enumerate(pages, start=1):
        page = doc.new_page(width=width, height=height)
        page.insert_text((margin, 36), header, fontname="helv", fontsize=8, color=(0.35, 0.35, 0.35))
        page.draw_line((margin, 42), (width - margin, 42), color=(0.6, 0.6, 0.6), width=0.5)
        is_title = number == 1 and heading == title
        size = 26 if is_title else 17
        top = 150.0 if is_title else 72.0
        page.insert_textbox(
            pymupdf.Rect(margin, top, width - margin, top + 2.2 * size), heading, fontname="hebo", fontsize=size
        )
        y = top + 2.2 * size + 12
        for paragraph in paragraphs:
            box = pymupdf.Rect(margin, y, width - margin, height - 70)
            spare = page.insert_textbox(box, paragraph, fontname="helv", fontsize=11, lineheight=1.35)
            if spare < 0:
                raise ValueError(f"{path.name} page {number}: text does not fit")
            y = box.y1 - spare + 14
        page.insert_text((margin, height - 36), f"{ORG} - page {number} of {len(pages)}", fontname="helv", fontsize=8)
    stamp = "D:20260115090000+00'00'"
    doc.set_metadata(
        {
            "title": title,
            "author": ORG,
            "subject": title,
            "creator": "tools/make_sample.py",
            "producer": "PyMuPDF",
            "creationDate": stamp,
            "modDate": stamp,
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    doc.save(path, garbage=4, deflate=True, no_new_id=True)
    doc.close()


# ---------------------------------------------------------------------------------------------------------
# Office documents
# ---------------------------------------------------------------------------------------------------------


def _normalise_zip(path: Path) -> None:
    """Rewrite an OOXML zip with fixed timestamps and sorted-as-written entries, for reproducible bytes."""
    with zipfile.ZipFile(path) as src:
        entries = [(info.filename, src.read(info.filename)) for info in src.infolist()]
    # openpyxl stamps the save time into docProps/core.xml whatever the workbook properties say.
    stamp = FIXED.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    entries = [
        (name, re.sub(rb"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)", rb"\g<1>" + stamp + rb"\g<2>", data))
        if name == "docProps/core.xml"
        else (name, data)
        for name, data in entries
    ]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            dst.writestr(info, data)
    path.write_bytes(buf.getvalue())


def _write_docx(path: Path) -> None:
    """Safety procedures: headings, paragraphs and a PPE table."""
    d = docx.Document()
    d.styles["Normal"].font.size = Pt(11)
    props = d.core_properties
    props.title, props.author = "Harbour Safety Procedures", ORG
    props.created = props.modified = FIXED
    props.last_modified_by, props.revision = ORG, 1

    d.add_heading("Harbour Safety Procedures (revision 7, January 2026)", level=0)
    d.add_paragraph(
        "These procedures apply to every employee, contractor and visiting crew working on Saltmere Harbour "
        "Authority property. The duty safety officer can be reached at any hour on VHF channel 14 or on the "
        "internal number 4400. Where these procedures and a vessel's own safety management system disagree, the "
        "stricter rule applies."
    )
    d.add_heading("1. Hot work permits", level=1)
    d.add_paragraph(
        "Welding, grinding, flame cutting or any other work that produces sparks or open flame requires a hot "
        "work permit signed by the area supervisor. A permit is valid for one shift only. A fire watch with a "
        "charged extinguisher must remain at the work site during the job and for sixty minutes afterwards. Hot "
        "work is never allowed within fifteen metres of the fuel berth at the Granary Wharf."
    )
    d.add_heading("2. Confined space entry", level=1)
    d.add_paragraph(
        "Ballast tanks, crane machinery houses, culverts and the pump chambers of the Inner Basin lock are "
        "treated as confined spaces. Before entry the atmosphere must be tested for oxygen, flammable gas, "
        "hydrogen sulphide and carbon monoxide; oxygen must read between 19.5 and 23 per cent. A standby person "
        "stays at the entrance for the whole entry, and a tripod and winch must be rigged for any vertical "
        "access deeper than two metres."
    )
    d.add_heading("3. Person overboard", level=1)
    d.add_paragraph(
        'Anyone who sees a person fall into the water shouts "man overboard", throws the nearest lifebuoy, keeps '
        "pointing at the casualty and calls Saltmere Port Control on VHF channel 12. Do not enter the water. "
        "Lifebuoys with throwing lines are placed every fifty metres along all quay edges and are inspected "
        "every Monday morning. Each team practises this drill once per quarter."
    )
    d.add_heading("4. Personal protective equipment by zone", level=1)
    d.add_paragraph("The minimum equipment required in each zone of the estate is listed below.")
    rows = [
        ("Zone", "Helmet", "Hi-vis", "Safety boots", "Lifejacket"),
        ("Pier Four container yard", "Yes", "Class 3", "Yes", "Within 2 m of edge"),
        ("Fishermen's Basin pontoons", "No", "Class 2", "Non-slip", "Always"),
        ("Granary Wharf bulk sheds", "Yes", "Class 2", "Yes", "Within 2 m of edge"),
        ("Cruise Quay and ferry lanes", "No", "Class 2", "No", "Within 2 m of edge"),
    ]
    table = d.add_table(rows=len(rows), cols=len(rows[0]))
    table.style = "Table Grid"
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    d.add_heading("5. Reporting near misses", level=1)
    d.add_paragraph(
        "Every near miss is reported within twenty-four hours using the yellow card or the SafeHarbour app. "
        "Reports are reviewed by the safety committee every second Thursday, and the three most useful reports "
        "of each quarter earn their authors a voucher for the staff canteen."
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    d.save(str(path))
    _normalise_zip(path)


SLIDES: list[tuple[str, list[str]]] = [
    (
        "Board Briefing - Q4 2025",
        [
            "Prepared for the board meeting of 22 January 2026",
            "Presented by the Chief Executive, Tomas Varga",
            "Agenda: Ostholm Quay terminal, cyber security, tariffs for 2026",
        ],
    ),
    (
        "Ostholm Quay Ferry Terminal Redevelopment",
        [
            "New two-storey terminal building with waiting room for 400 passengers",
            "Linkspan replaced to take the larger double-ended ferries from 2028",
            "Estimated cost 31 million euros; 40 per cent covered by the regional islands fund",
            "Construction window: September 2026 to May 2028, ferry service kept running throughout",
        ],
    ),
    (
        "Cyber Security: December Phishing Incident",
        [
            "On 4 December a fake invoice email reached 212 staff mailboxes",
            "Nine people clicked the link; two entered passwords, which were reset within the hour",
            "No access to the vessel traffic system or the berth planning system was found",
            "Action: hardware security keys for all finance and port control staff by March",
        ],
    ),
    (
        "Decisions Requested from the Board",
        [
            "Approve the 2026 tariff increase of 3.5 per cent for cargo dues",
            "Keep passenger dues on the Ostholm route frozen for a second year",
            "Release 2.6 million euros from reserves for West Mole breakwater repairs",
            "Commission the feasibility study for a second shore power berth",
        ],
    ),
]


def _write_pptx(path: Path) -> None:
    """Board briefing: four slides with a title and bullet points each."""
    prs = Presentation()
    prs.slide_width, prs.slide_height = Inches(13.333), Inches(7.5)
    props = prs.core_properties
    props.title, props.author = "Board Briefing Q4 2025", ORG
    props.created = props.modified = FIXED
    props.last_modified_by, props.revision = ORG, 1
    for i, (title, bullets) in enumerate(SLIDES):
        slide = prs.slides.add_slide(prs.slide_layouts[0 if i == 0 else 1])
        slide.shapes.title.text = title
        body = slide.placeholders[1]
        if i == 0:
            body.text = "\n".join(bullets)
            continue
        body.left, body.top, body.width, body.height = Inches(0.8), Inches(1.7), Inches(11.7), Inches(5.2)
        frame = body.text_frame
        frame.text = bullets[0]
        for bullet in bullets[1:]:
            frame.add_paragraph().text = bullet
        for para in frame.paragraphs:
            para.font.size = PptPt(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    prs.save(str(path))
    _normalise_zip(path)


BUDGET: list[tuple[str, str, int, int]] = [
    ("Staff salaries and pensions", "Operating", 48_300_000, 46_900_000),
    ("Pilotage and towage contracts", "Operating", 9_750_000, 9_420_000),
    ("Maintenance dredging (Inner Basin)", "Operating", 2_100_000, 1_980_000),
    ("Electricity and fuel", "Operating", 4_400_000, 4_650_000),
    ("Insurance premiums", "Operating", 3_050_000, 2_610_000),
    ("IT and cyber security", "Operating", 2_800_000, 2_150_000),
    ("West Mole breakwater repair", "Capital", 2_600_000, 0),
    ("Ostholm Quay terminal (phase 1)", "Capital", 8_200_000, 0),
    ("Second shore power berth study", "Capital", 450_000, 0),
    ("Replacement of cranes STS-01 and STS-02 (deposit)", "Capital", 5_900_000, 0),
    ("Pontoon C rebuild, Fishermen's Basin", "Capital", 780_000, 0),
]


def _write_xlsx(path: Path) -> None:
    """Budget 2026: one sheet of line items with 2026 budget, 2025 actual and totals."""
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Budget 2026"
    wb.properties.creator = wb.properties.lastModifiedBy = ORG
    wb.properties.title = "Budget 2026"
    wb.properties.created = wb.properties.modified = FIXED
    ws.append(["Saltmere Harbour Authority - Budget 2026 (euros), approved by the board on 22 January 2026"])
    ws["A1"].font = Font(bold=True, size=12)
    ws.append([])
    ws.append(["Line item", "Category", "Budget 2026", "Actual 2025", "Change"])
    for cell in ws[3]:
        cell.font = Font(bold=True)
    for item, category, budget, actual in BUDGET:
        ws.append([item, category, budget, actual, budget - actual])
    last = ws.max_row
    ws.append(["Total", "", f"=SUM(C4:C{last})", f"=SUM(D4:D{last})", f"=SUM(E4:E{last})"])
    ws.append([])
    ws.append(["Note: insurance premiums rise by 17 per cent after the Storm Orla claims."])
    for row in ws.iter_rows(min_row=4, max_row=last + 1, min_col=3, max_col=5):
        for cell in row:
            cell.number_format = "#,##0"
    ws.column_dimensions["A"].width = 52
    ws.column_dimensions["B"].width = 12
    for col in "CDE":
        ws.column_dimensions[col].width = 15
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    _normalise_zip(path)


# ---------------------------------------------------------------------------------------------------------
# Text formats
# ---------------------------------------------------------------------------------------------------------

WILDLIFE_MD = """\
# Harbour Wildlife Survey 2025

Prepared for the Saltmere Harbour Authority environment team by the volunteer group *Friends of the Vellan
Estuary*, coordinated by ecologist Dr. Saoirse Linnell. Fieldwork ran from April to October 2025 with 46 survey
visits by boat and from the shore.

## Harbour porpoises

Porpoises were recorded on 19 of the 46 visits, most often at the mouth of the North Channel on a rising tide.
The largest group, seven animals including two calves, was seen off Beacon Point on 12 August. Sightings did
not drop during the dredging months, although the animals kept at least 500 metres from the Grey Heron.

## Grey seals at Skerry Rocks

The haul-out on Skerry Rocks held a maximum count of 84 grey seals on 30 September, the highest since counts
began in 2011. Tour boat skippers have agreed to stay 100 metres off the rocks and to cut engine speed to dead
slow during the pupping season.

## Eider ducks and terns

About 310 common eiders wintered in the Fishermen's Basin. A colony of 52 pairs of Arctic terns nested on the
old seaplane slipway at the eastern end of the Inner Basin, where the authority fenced off the area and put up
nesting boxes. Thirty-eight chicks fledged.

## Tansy Flats seagrass meadow

Drone mapping showed the meadow covering 41 hectares, a small increase on 2024 despite the nearby dredging.
Shoot density was highest in the southern lobe, with around 620 shoots per square metre.

## Recommendations

- Keep the turbidity buoys in place for maintenance dredging, not only for capital works.
- Extend the no-wash speed limit of 5 knots to the whole Skerry Rocks area from May to October.
- Repeat the tern fencing every spring and add a camera to monitor gull predation.
"""

VISITOR_FAQ_HTML = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Visiting Saltmere Harbour - Frequently Asked Questions</title>
<style>
body { font-family: sans-serif; max-width: 46em; margin: 2em auto; line-height: 1.5; color: #223; }
h1 { color: #0b4f6c; } h2 { color: #1a6f8a; font-size: 1.15em; margin-top: 1.6em; }
</style>
</head>
<body>
<h1>Visiting Saltmere Harbour: Frequently Asked Questions</h1>
<p>Welcome to Saltmere. The working harbour is open to visitors along the public promenade from the Cruise Quay
to the Fishermen's Basin. The visitor centre on Chandlers Row is open daily from 10:00 to 17:00.</p>

<h2>Where can I park?</h2>
<p>The Harbour Gate car park has 320 spaces and charges 2 euros per hour, with a daily cap of 12 euros. Coaches
use the drop-off bay on Rope Walk. There is no public parking inside the port gates.</p>

<h2>Can I visit the Beacon Point lighthouse?</h2>
<p>Yes. The lighthouse opens on the first Sunday of each month from May to September. Guided groups of twelve
climb the 143 steps to the lantern gallery every half hour. Tickets cost 6 euros for adults; children under
eight cannot climb for safety reasons.</p>

<h2>Are there boat tours of the harbour?</h2>
<p>Seal-watching trips to Skerry Rocks leave from the Fishermen's Basin at 11:00 and 15:00 from April to
October, and take about ninety minutes. The boats keep their distance from the seals, so binoculars are
a good idea.</p>

<h2>May I fish from the piers?</h2>
<p>Angling is allowed only from the end of the East Pier. Fishing from the West Mole, the container terminal or
any berth is forbidden, and the West Mole is closed to the public until the storm repairs are finished.</p>

<h2>Can I bring my dog?</h2>
<p>Dogs on a lead are welcome on the promenade and at the visitor centre, but not on the lighthouse tours or
the ferry waiting room at Ostholm Quay, except for assistance dogs.</p>
</body>
</html>
"""

MEETING_NOTES_TXT = """\
OPERATIONS MEETING - NOTES
Date: 3 February 2026, 08:30, Port Control conference room
Present: Capt. Idris Okonjo (Harbour Master, chair), Lena Marsh (Pilotage), Farid Qasemi (Pier Four terminal),
Annika Brun (Marine Services), Joel Tebbit (IT), Rosa Delacourt (minutes)

1. Pilotage scheduling
Lena Marsh reported that the pilot roster is short by two pilots until the trainees qualify in May. Night
boardings for vessels over 300 metres will be limited to one per tide. The electric pilot boat Tern has done
1,140 transfers since it arrived and its battery is holding 97 per cent of its original capacity.

2. Berth planning software
Joel Tebbit said the new berth allocation tool, BerthPlan, will go live on 1 March, replacing the spreadsheet
that Port Control has used since 2014. Shipping agents will book berth windows through a web portal and
receive confirmation by email. Parallel running with the old spreadsheet will last two weeks.

3. Tugs
The tug Kestrel returns from dry dock at Ferrow on 10 February after new propeller shafts were fitted. Until
then only two tugs are available, so Pier Four must avoid scheduling two large arrivals within the same hour.
Farid Qasemi agreed to stagger the Tuesday vessel windows.

4. Ice in the Inner Basin
If the cold weather continues, thin ice may form in the Inner Basin. Annika Brun will keep the workboat Puffin
on standby to break ice around the lock gates in the early morning, and the lock will only operate between
07:00 and 19:00 while ice is present.

5. Any other business
The West Mole repair contract is out to tender with a closing date of 27 February. Next meeting: 3 March 2026.

Actions: LM - revised night boarding rule to agents by Friday. JT - BerthPlan training for Port Control staff.
AB - ice watch rota. FQ - new Tuesday windows to shipping lines.
"""


# ---------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans when installed, otherwise Pillow's built-in font at the requested size."""
    for candidate in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(candidate, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def _save_png(img: Image.Image, path: Path) -> None:
    """Save as a small palette PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img.convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(path, optimize=True)


def _harbour_map(path: Path) -> None:
    """A schematic plan of the harbour with labelled quays, channel and breakwater."""
    img = Image.new("RGB", (800, 560), (178, 214, 232))
    d = ImageDraw.Draw(img)
    land = (226, 214, 178)
    d.polygon([(0, 380), (250, 350), (420, 400), (800, 360), (800, 560), (0, 560)], fill=land)
    d.polygon([(560, 0), (800, 0), (800, 300), (700, 260), (640, 150)], fill=land)
    # Inner Basin, piers and quays
    d.rectangle((300, 300, 430, 380), fill=(150, 196, 220), outline=(40, 60, 80), width=2)
    d.rectangle((470, 240, 520, 380), fill=(200, 200, 200), outline=(40, 40, 40), width=2)
    d.rectangle((150, 300, 250, 340), fill=(200, 200, 200), outline=(40, 40, 40), width=2)
    for x in range(478, 515, 9):
        d.line((x, 250, x, 230), fill=(200, 60, 40), width=3)
    # West Mole breakwater and North Channel
    d.line((80, 370, 200, 200), fill=(90, 90, 90), width=10)
    d.line((330, 20, 390, 290), fill=(30, 80, 160), width=4)
    d.line((390, 20, 440, 290), fill=(30, 80, 160), width=4)
    # Beacon Point lighthouse
    d.ellipse((640, 130, 660, 150), fill=(230, 50, 40), outline=(0, 0, 0))
    # Skerry Rocks
    for cx, cy in ((120, 90), (140, 110), (105, 115)):
        d.ellipse((cx - 9, cy - 6, cx + 9, cy + 6), fill=(120, 110, 100))
    f, small = _font(18), _font(14)
    labels = [
        ((300, 8), "NORTH CHANNEL (13.5 m)", f),
        ((470, 390), "Pier Four", small),
        ((470, 408), "Container Terminal", small),
        ((305, 385), "Inner Basin", small),
        ((140, 345), "Cruise Quay", small),
        ((20, 205), "West Mole", small),
        ((670, 150), "Beacon Point", small),
        ((80, 60), "Skerry Rocks", small),
    ]
    for xy, text, font in labels:
        d.text(xy, text, fill=(10, 20, 40), font=font)
    d.text((20, 520), "Saltmere Harbour - schematic plan, not for navigation", fill=(10, 20, 40), font=_font(16))
    _save_png(img, path)


def _lighthouse_sketch(path: Path) -> None:
    """A simple drawing of the Beacon Point lighthouse on its rock, with a caption."""
    img = Image.new("RGB", (420, 560), (214, 232, 244))
    d = ImageDraw.Draw(img)
    d.rectangle((0, 430, 420, 560), fill=(70, 110, 150))
    d.polygon([(60, 470), (130, 400), (300, 395), (370, 470)], fill=(110, 100, 90))
    # Tower with red and white bands
    top, bottom = 140, 400
    for i, y in enumerate(range(top, bottom, 52)):
        w_top = 30 + (y - top) * 0.12
        w_bot = 30 + (min(y + 52, bottom) - top) * 0.12
        colour = (200, 40, 40) if i % 2 == 0 else (245, 245, 245)
        d.polygon(
            [
                (210 - w_top, y),
                (210 + w_top, y),
                (210 + w_bot, min(y + 52, bottom)),
                (210 - w_bot, min(y + 52, bottom)),
            ],
            fill=colour,
            outline=(60, 60, 60),
        )
    d.rectangle((180, 100, 240, 140), fill=(255, 236, 150), outline=(40, 40, 40), width=2)
    d.polygon([(172, 100), (248, 100), (210, 70)], fill=(40, 40, 40))
    d.rectangle((165, 138, 255, 146), fill=(40, 40, 40))
    for dx in (-1, 1):
        d.polygon([(210 + dx * 30, 110), (210 + dx * 200, 60), (210 + dx * 200, 160)], fill=(255, 248, 200))
    d.text((20, 20), "Beacon Point Lighthouse", fill=(20, 30, 50), font=_font(24))
    d.text((20, 520), "Built 1879 - 143 steps - light every 10 s", fill=(240, 240, 240), font=_font(15))
    _save_png(img, path)


def _crane_chart(path: Path) -> None:
    """A bar chart of average moves per hour for the nine Pier Four cranes in 2025."""
    moves = [26.1, 25.4, 31.3, 31.0, 33.4, 33.1, 31.8, 34.6, 35.9]
    img = Image.new("RGB", (640, 400), (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.text((20, 12), "Pier Four crane productivity 2025 (moves per hour)", fill=(0, 0, 0), font=_font(17))
    x0, y0, scale = 60, 340, 7.0
    d.line((x0, 60, x0, y0), fill=(0, 0, 0), width=2)
    d.line((x0, y0, 620, y0), fill=(0, 0, 0), width=2)
    small = _font(12)
    for tick in range(0, 41, 10):
        y = y0 - tick * scale
        d.line((x0 - 5, y, x0, y), fill=(0, 0, 0))
        d.text((x0 - 30, y - 7), str(tick), fill=(0, 0, 0), font=small)
    for i, value in enumerate(moves):
        left = x0 + 12 + i * 61
        colour = (230, 120, 30) if i >= 7 else (40, 100, 170)
        d.rectangle((left, y0 - value * scale, left + 42, y0), fill=colour)
        d.text((left + 4, y0 - value * scale - 16), f"{value:.1f}", fill=(0, 0, 0), font=small)
        d.text((left, y0 + 6), f"STS-0{i + 1}", fill=(0, 0, 0), font=small)
    d.text((x0, 372), "Orange: new Halvorsen Lift cranes, remote operated", fill=(90, 90, 90), font=small)
    _save_png(img, path)


# ---------------------------------------------------------------------------------------------------------
# Video and audio (small: the demo shows video and audio hits; ~10 s in all)
# ---------------------------------------------------------------------------------------------------------

AUDIO_RATE = 16_000
VIDEO_SIZE = (320, 180)
VIDEO_FPS = 8
VIDEO_SECONDS = 8


def _foghorn(seconds: float, rate: int = AUDIO_RATE) -> np.ndarray:
    """A two-tone diaphone-like blast: a low buzzy fundamental with many harmonics, slow attack and release."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = np.where(t < seconds * 0.7, 165.0, 140.0)  # the characteristic drop in pitch at the end of a blast
    phase = 2 * np.pi * np.cumsum(f0) / rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = np.minimum(1.0, t / 0.25) * np.minimum(1.0, (seconds - t) / 0.4)
    return (0.5 * tone * env / np.max(np.abs(tone))).astype(np.float32)


def _bell(seconds: float, rate: int = AUDIO_RATE) -> np.ndarray:
    """Three strikes of a ship's bell: inharmonic partials with exponential decay."""
    n = int(seconds * rate)
    out = np.zeros(n, dtype=np.float32)
    partials = [(523.0, 1.0), (1046.0 * 1.19, 0.6), (1567.0 * 1.02, 0.4), (2093.0 * 1.31, 0.25)]
    for start in (0.0, seconds / 3, 2 * seconds / 3):
        t = np.arange(n - int(start * rate)) / rate
        strike = np.sum([a * np.sin(2 * np.pi * f * t) * np.exp(-t * (2.5 + f / 900)) for f, a in partials], axis=0)
        out[int(start * rate) :] += 0.3 * strike.astype(np.float32)
    return out


def _harbour_sounds() -> np.ndarray:
    """Foghorn, a second of silence, then the bell: two clips once ingest splits at the silence."""
    silence = np.zeros(AUDIO_RATE, dtype=np.float32)
    return np.concatenate([_foghorn(2.5), silence, _bell(2.5)])


def _write_wav(path: Path, samples: np.ndarray, rate: int = AUDIO_RATE) -> None:
    """16-bit mono PCM (the stdlib writer: fixed header, same bytes every run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def _webcam_frame(i: int) -> Image.Image:
    """Frame i of the Pier Four webcam: a container ship crossing the harbour past the lighthouse."""
    w, h = VIDEO_SIZE
    img = Image.new("RGB", (w, h), (150, 196, 230))
    d = ImageDraw.Draw(img)
    d.rectangle((0, 110, w, h), fill=(40, 90, 140))
    # Beacon Point lighthouse on its rock, right
    d.polygon([(250, 112), (270, 96), (310, 98), (320, 112)], fill=(110, 100, 90))
    for k, y in enumerate(range(50, 98, 12)):
        d.rectangle((279, y, 293, y + 12), fill=(200, 40, 40) if k % 2 == 0 else (245, 245, 245))
    d.rectangle((277, 40, 295, 50), fill=(255, 236, 150), outline=(40, 40, 40))
    # The ship: hull, bridge and stacked containers, moving left to right
    x = -120 + i * (w + 60) / (VIDEO_FPS * VIDEO_SECONDS)
    d.polygon([(x, 100), (x + 130, 100), (x + 120, 118), (x + 8, 118)], fill=(120, 30, 30))
    d.rectangle((x + 6, 78, x + 22, 100), fill=(235, 235, 235))
    colours = [(200, 90, 30), (30, 110, 170), (60, 150, 70), (220, 190, 40)]
    for col in range(6):
        for row in range(2):
            cx = x + 26 + col * 15
            d.rectangle((cx, 88 - row * 10, cx + 13, 98 - row * 10), fill=colours[(col + row) % 4])
    d.text((6, 4), "SALTMERE HARBOUR - PIER FOUR WEBCAM", fill=(10, 20, 40), font=_font(12))
    d.text((6, h - 18), f"2025-11-14 07:42:{i // VIDEO_FPS:02d}", fill=(240, 240, 240), font=_font(11))
    return img


def _write_video(path: Path) -> None:
    """An 8 s H.264/AAC MP4 (plays in every browser) of the webcam frames with the foghorn as its sound.

    Bit-exact flags and one thread keep the bytes stable for one ffmpeg build; another build may differ.
    """
    from loupe.ingest.ffmpeg import find_tools  # the ffmpeg Loupe itself uses (system, else imageio-ffmpeg's)

    path.parent.mkdir(parents=True, exist_ok=True)
    wav = path.with_suffix(".tmp.wav")
    sound = np.concatenate([np.zeros(AUDIO_RATE * 2, np.float32), _foghorn(3.0), np.zeros(AUDIO_RATE * 3, np.float32)])
    _write_wav(wav, sound)
    frames = b"".join(_webcam_frame(i).tobytes() for i in range(VIDEO_FPS * VIDEO_SECONDS))
    w, h = VIDEO_SIZE
    cmd = [
        find_tools().ffmpeg, "-hide_banner", "-v", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(VIDEO_FPS), "-i", "pipe:",
        "-i", str(wav),
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "30", "-preset", "medium", "-threads", "1",
        "-c:a", "aac", "-b:a", "48k", "-shortest", "-movflags", "+faststart",
        "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
        str(path),
    ]  # fmt: skip
    try:
        subprocess.run(cmd, input=frames, check=True, capture_output=True)
    finally:
        wav.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------------------------------------

QUERIES: list[tuple[str, str, str]] = [
    ("how deep was the north channel dredged and who was the contractor", "pdf/annual_report_2025.pdf", "3"),
    ("remote-controlled ship-to-shore cranes and moves per hour", "pdf/annual_report_2025.pdf", "5"),
    ("shore power for cruise ships and the electric pilot boat", "pdf/annual_report_2025.pdf", "4"),
    ("how many passengers used the island ferry last year", "pdf/annual_report_2025.pdf", "2"),
    ("peak wind gust and surge height during the November storm", "pdf/storm_incident_report.pdf", "1"),
    ("Welche Schäden entstanden am Wellenbrecher beim Sturm?", "pdf/storm_incident_report.pdf", "2"),
    ("rule for stacking empty containers in high wind", "pdf/storm_incident_report.pdf", "3"),
    ("oxygen levels required before entering a confined space", "docs/safety_procedures.docx", "-"),
    ("phishing email sent to staff in December", "docs/board_briefing.pptx", "slide 3"),
    ("how much is budgeted for insurance premiums in 2026", "docs/budget_2026.xlsx", "sheet Budget 2026"),
    ("Combien de phoques gris ont été comptés sur les rochers ?", "docs/wildlife_survey.md", "-"),
    ("opening days and ticket price for climbing the lighthouse", "docs/visitor_faq.html", "-"),
    ("when does the new berth allocation software go live", "docs/meeting_notes.txt", "-"),
    ("map of the harbour showing the breakwater and container terminal", "images/harbour_map.png", "-"),
]


def _queries_md() -> str:
    """The QUERIES.md table."""
    lines = [
        "# Sample queries",
        "",
        "The `sample/` folder is a fictional archive of the Saltmere Harbour Authority, generated by",
        "`python tools/make_sample.py` (do not edit the files by hand). Each query below should rank the listed",
        "file (and page, for PDFs and slides) first. Two queries are in German and French to exercise the",
        "multilingual embedding space against English documents. Try for example:",
        "",
        '    loupe search "how deep was the north channel dredged"',
        "",
        "| # | Query | Expected file | Page |",
        "|---|-------|---------------|------|",
    ]
    for i, (query, file, page) in enumerate(QUERIES, start=1):
        lines.append(f"| {i} | {query} | `{file}` | {page} |")
    lines += [
        "",
        "`-` means the format has no pages. `images/lighthouse_sketch.png` and `images/crane_productivity_chart.png`",
        'are further image targets (e.g. "drawing of a red and white lighthouse", "bar chart of crane',
        'productivity").',
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------


def generate(out: Path, queries: Path | None = None) -> list[Path]:
    """Write every sample file under ``out`` (and the example-query table to ``queries``); return their paths.

    The query table lives outside ``out`` so that ingesting the corpus does not index the queries themselves.
    """
    out.mkdir(parents=True, exist_ok=True)
    header = f"{ORG} | Annual Report 2025"
    _write_pdf(out / "pdf/annual_report_2025.pdf", "Annual Report 2025", header, ANNUAL_REPORT)
    _write_pdf(
        out / "pdf/storm_incident_report.pdf",
        "Storm Orla Incident Report",
        f"{ORG} | Incident report SHA-IR-2025-017 | Storm Orla, 14-15 November 2025",
        STORM_REPORT,
    )
    _write_docx(out / "docs/safety_procedures.docx")
    _write_pptx(out / "docs/board_briefing.pptx")
    _write_xlsx(out / "docs/budget_2026.xlsx")
    texts = {
        "docs/wildlife_survey.md": WILDLIFE_MD,
        "docs/visitor_faq.html": VISITOR_FAQ_HTML,
        "docs/meeting_notes.txt": MEETING_NOTES_TXT,
    }
    for rel, text in texts.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text, encoding="utf-8", newline="\n")
    _harbour_map(out / "images/harbour_map.png")
    _lighthouse_sketch(out / "images/lighthouse_sketch.png")
    _crane_chart(out / "images/crane_productivity_chart.png")
    _write_wav(out / "media/harbour_sounds.wav", _harbour_sounds())
    _write_video(out / "media/pier_four_webcam.mp4")
    if queries is not None:
        queries.parent.mkdir(parents=True, exist_ok=True)
        queries.write_text(_queries_md(), encoding="utf-8", newline="\n")
    return sorted(p for p in out.rglob("*") if p.is_file())


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", nargs="?", default="sample", type=Path, help="output folder (default: sample)")
    parser.add_argument(
        "--queries", default=Path("docs/sample-queries.md"), type=Path, help="where to write the example queries"
    )
    args = parser.parse_args()
    for path in generate(args.out, args.queries):
        print(f"{path.stat().st_size:>8}  {path}")


if __name__ == "__main__":
    main()
