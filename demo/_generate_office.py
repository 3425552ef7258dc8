"""Regenerate the binary (docx / pptx / xlsx) documents of the Acme demo corpus.

Run from anywhere with an interpreter that has python-docx, python-pptx and openpyxl:

    .venv/bin/python demo/_generate_office.py

All content is fictional. Output files are written next to this script (demo/<folder>/...)
and their zip containers are normalised (fixed timestamps, fixed document metadata) so
that re-running the script produces byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile
from pathlib import Path

from docx import Document
from docx.shared import Pt
from openpyxl import Workbook
from openpyxl.styles import Font
from pptx import Presentation
from pptx.util import Pt as PptPt

ROOT = Path(__file__).resolve().parent
FIXED_TIME = dt.datetime(2026, 10, 1, 9, 0, 0)
ZIP_TIME = (2026, 10, 1, 9, 0, 0)


# --------------------------------------------------------------------------- helpers


def _normalise_zip(path: Path) -> None:
    """Rewrite an OOXML zip with fixed entry timestamps so output is reproducible."""
    src = path.read_bytes()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(src)) as zin, zipfile.ZipFile(
        out, "w", compression=zipfile.ZIP_DEFLATED
    ) as zout:
        for item in zin.infolist():
            info = zipfile.ZipInfo(item.filename, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            data = zin.read(item.filename)
            if item.filename == "docProps/core.xml":
                # openpyxl stamps the save time into dcterms:modified; pin it.
                data = re.sub(
                    rb"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)",
                    rb"\g<1>" + FIXED_TIME.strftime("%Y-%m-%dT%H:%M:%SZ").encode() + rb"\g<2>",
                    data,
                )
            zout.writestr(info, data)
    path.write_bytes(out.getvalue())


def _set_core(props, title: str, author: str, subject: str = "") -> None:
    props.title = title
    props.author = author
    props.subject = subject
    props.last_modified_by = author
    props.created = FIXED_TIME
    props.modified = FIXED_TIME
    props.revision = 1


def _docx(rel: str, title: str, author: str, build) -> None:
    doc = Document()
    doc.styles["Normal"].font.name = "Calibri"
    doc.styles["Normal"].font.size = Pt(11)
    _set_core(doc.core_properties, title, author)
    doc.add_heading(title, level=0)
    build(doc)
    path = ROOT / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    doc.save(path)
    _normalise_zip(path)


def _table(doc, header: list[str], rows: list[list[str]]) -> None:
    table = doc.add_table(rows=1, cols=len(header))
    table.style = "Light Grid Accent 1"
    for cell, text in zip(table.rows[0].cells, header):
        cell.text = text
        for run in cell.paragraphs[0].runs:
            run.bold = True
    for row in rows:
        cells = table.add_row().cells
        for cell, text in zip(cells, row):
            cell.text = str(text)


def _bullets(doc, items: list[str], style: str = "List Bullet") -> None:
    for item in items:
        doc.add_paragraph(item, style=style)


def _pptx(rel: str, title: str, subtitle: str, author: str, slides: list[tuple[str, list]]) -> None:
    prs = Presentation()
    _set_core(prs.core_properties, title, author)
    first = prs.slides.add_slide(prs.slide_layouts[0])
    first.shapes.title.text = title
    first.placeholders[1].text = subtitle
    for slide_title, bullets in slides:
        slide = prs.slides.add_slide(prs.slide_layouts[1])
        slide.shapes.title.text = slide_title
        body = slide.placeholders[1].text_frame
        body.clear()
        for i, bullet in enumerate(bullets):
            level = 0
            if isinstance(bullet, tuple):
                level, bullet = bullet
            para = body.paragraphs[0] if i == 0 else body.add_paragraph()
            para.text = bullet
            para.level = level
            for run in para.runs:
                run.font.size = PptPt(18 if level == 0 else 15)
    path = ROOT / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    prs.save(path)
    _normalise_zip(path)


def _xlsx(rel: str, title: str, author: str, sheets: list[tuple[str, list[str], list[list]]]) -> None:
    wb = Workbook()
    wb.remove(wb.active)
    _set_core(wb.properties, title, author)
    wb.properties.creator = author
    wb.properties.lastModifiedBy = author
    for name, header, rows in sheets:
        ws = wb.create_sheet(name)
        ws.append(header)
        for cell in ws[1]:
            cell.font = Font(bold=True)
        for row in rows:
            ws.append(row)
        ws.freeze_panes = "A2"
        for col_cells in ws.columns:
            width = max(len(str(c.value)) if c.value is not None else 0 for c in col_cells)
            ws.column_dimensions[col_cells[0].column_letter].width = min(max(10, width + 2), 60)
    path = ROOT / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    _normalise_zip(path)


# --------------------------------------------------------------------------- company


def office_locations(doc) -> None:
    doc.add_paragraph(
        "Acme Corp operates five offices across the United States and Europe. This guide lists "
        "addresses, desk capacity, site leads and practical information for visitors and new "
        "joiners. Maintained by Workplace Operations (Fiona Gallagher). Updated 1 October 2026."
    )
    doc.add_heading("Office Directory", level=1)
    _table(
        doc,
        ["Office", "Address", "Desks", "Site lead", "Reception"],
        [
            ["London (HQ)", "1 Southwark Bridge Road, London SE1 9HL, UK", "240", "Fiona Gallagher", "+44 20 7946 0100"],
            ["Berlin", "Rosenthaler Strasse 40, 10178 Berlin, Germany", "120", "Lena Fischer", "+49 30 5557 2200"],
            ["Austin", "500 W 2nd Street, Suite 1900, Austin, TX 78701, USA", "110", "Ravi Iyer", "+1 512 555 0140"],
            ["San Francisco", "150 Spear Street, Floor 12, San Francisco, CA 94105, USA", "70", "Marcus Bell", "+1 415 555 0180"],
            ["Dublin (opening Feb 2027)", "3 Grand Canal Quay, Dublin 2, D02 VX82, Ireland", "60", "Sandra Liu", "+353 1 555 0120"],
        ],
    )
    doc.add_heading("Opening Hours and Access", level=1)
    doc.add_paragraph(
        "All offices are open 07:00 to 20:00 on working days. Your Acme badge opens every office; "
        "visitors must be registered in Envoy at least 24 hours in advance and collected from "
        "reception. Weekend access requires approval from the site lead."
    )
    doc.add_heading("London Headquarters", level=1)
    doc.add_paragraph(
        "Floors 2 and 4 (floor 3 is sublet from January 2027). Nearest stations: London Bridge "
        "(Northern and Jubilee lines) and Southwark. Bike storage for 40 bicycles and showers on "
        "the ground floor. The Thames room (80 seats) hosts the quarterly all-hands."
    )
    doc.add_heading("Berlin", level=1)
    doc.add_paragraph(
        "Home of the Platform and Data Infrastructure engineering teams. U-Bahn Rosenthaler Platz "
        "(U8). Lunch is catered on Tuesdays and Thursdays."
    )
    doc.add_heading("Austin", level=1)
    doc.add_paragraph(
        "Americas hub for Customer Success, Support and SRE. Parking is validated for up to 50 cars "
        "in the Second Street garage; request a permit from the site lead."
    )
    doc.add_heading("San Francisco", level=1)
    doc.add_paragraph(
        "Sales and Product office, five minutes from Embarcadero BART. Hot-desking only; book "
        "desks in Robin."
    )
    doc.add_heading("Dublin", level=1)
    doc.add_paragraph(
        "Our new EMEA support hub and EU data-protection base. Fit-out is under way; until the move "
        "in February 2027 the Dublin team works from WeWork, 2 Dublin Landings."
    )
    doc.add_heading("Emergencies", level=1)
    _bullets(
        doc,
        [
            "Fire assembly points are posted next to every lift.",
            "First aiders and fire wardens wear green lanyards; the list is on each kitchen noticeboard.",
            "Building security is staffed 24/7 in London and San Francisco.",
        ],
    )


def strategy_deck() -> None:
    _pptx(
        "company/company-strategy-2027.pptx",
        "Acme Corp Strategy 2027",
        "Margaret Okafor, CEO - All-hands, 14 October 2026 - Internal only",
        "Margaret Okafor",
        [
            (
                "Where we are",
                [
                    "1,200+ customers across 31 countries",
                    "Net revenue retention 118%",
                    "400+ employees in five offices (Dublin opens February 2027)",
                    "Atlas platform 80% migrated to Kubernetes",
                ],
            ),
            (
                "Our mission",
                [
                    "Make every business decision a data-informed decision",
                    "Analytics that product teams can embed in a day",
                ],
            ),
            (
                "Bet 1: Atlas Insights embedded analytics",
                [
                    "Embeddable dashboards and widgets for customers' own products",
                    (1, "General availability in Q2 2027"),
                    (1, "Target: 150 paying Insights customers by year end"),
                ],
            ),
            (
                "Bet 2: DACH expansion",
                [
                    "Frankfurt data residency region live since May 2026",
                    "Grow the Munich and Berlin sales teams from 9 to 20",
                    "Strategic partnerships with two German system integrators",
                ],
            ),
            (
                "Bet 3: Self-serve tier",
                [
                    "Credit-card sign-up for teams of up to 25 users",
                    "Product-led growth funnel owned by a dedicated squad",
                ],
            ),
            (
                "How we will work",
                [
                    "Write it down: every decision has a document",
                    "Reliability first: 99.95% availability SLO",
                    "Open the Dublin office in February 2027",
                    "Grow thoughtfully: hiring plan reviewed each quarter",
                ],
            ),
            (
                "What this means for you",
                [
                    "Team OKRs published by 15 December",
                    "New learning budget of USD 1,500 per person",
                    "Questions? #ask-leadership or the all-hands Q&A",
                ],
            ),
        ],
    )


# --------------------------------------------------------------------------- hr


def salary_bands() -> None:
    zones = {"US-Tier1": ("USD", 1.0), "UK-London": ("GBP", 0.62), "DE-Berlin": ("EUR", 0.60)}
    eng_mid = {"L1": 98, "L2": 118, "L3": 142, "L4": 168, "L5": 198, "L6": 238, "L7": 285, "L8": 340}
    eng_titles = {
        "L1": "Associate Software Engineer",
        "L2": "Software Engineer I",
        "L3": "Software Engineer II",
        "L4": "Senior Software Engineer",
        "L5": "Staff Software Engineer",
        "L6": "Senior Staff Software Engineer",
        "L7": "Principal Engineer",
        "L8": "Distinguished Engineer",
    }
    bonus = {"L1": 0, "L2": 0, "L3": 5, "L4": 10, "L5": 12, "L6": 15, "L7": 20, "L8": 25}
    equity = {"L1": 2000, "L2": 4000, "L3": 6000, "L4": 10000, "L5": 16000, "L6": 26000, "L7": 40000, "L8": 60000}
    rows: list[list] = []

    def add(family: str, level: str, title: str, zone: str, midpoint_usd_k: float) -> None:
        currency, factor = zones[zone]
        mid = round(midpoint_usd_k * factor * 1000, -3)
        rows.append(
            [
                family,
                level,
                title,
                zone,
                currency,
                int(round(mid * 0.8, -3)),
                int(mid),
                int(round(mid * 1.2, -3)),
                bonus[level],
                equity[level],
            ]
        )

    for zone in zones:
        for level, mid in eng_mid.items():
            add("Software Engineering", level, eng_titles[level], zone, mid)
    for level, title, mid in [
        ("L4", "Site Reliability Engineer", 172),
        ("L5", "Senior Site Reliability Engineer", 204),
        ("L6", "Staff Site Reliability Engineer", 245),
    ]:
        add("Site Reliability Engineering", level, title, "US-Tier1", mid)
    for level, title, mid in [
        ("L3", "Product Manager", 140),
        ("L4", "Senior Product Manager", 170),
        ("L5", "Group Product Manager", 205),
        ("L6", "Director of Product", 245),
    ]:
        add("Product Management", level, title, "US-Tier1", mid)
    for level, title, mid in [
        ("L3", "Account Executive", 90),
        ("L4", "Senior Account Executive", 115),
        ("L5", "Enterprise Account Executive", 140),
    ]:
        add("Sales (base only; OTE 2x base)", level, title, "US-Tier1", mid)
    for level, title, mid in [
        ("L2", "Support Engineer", 72),
        ("L3", "Senior Support Engineer", 88),
        ("L4", "Customer Success Manager", 105),
    ]:
        add("Customer Success", level, title, "US-Tier1", mid)
    for level, title, mid in [
        ("L3", "Financial Analyst", 95),
        ("L4", "Senior Financial Analyst", 118),
        ("L5", "FP&A Manager", 145),
    ]:
        add("Finance", level, title, "US-Tier1", mid)
    for level, title, mid in [
        ("L3", "People Partner", 92),
        ("L4", "Senior HR Business Partner", 115),
    ]:
        add("People", level, title, "US-Tier1", mid)
    for level, title, mid in [
        ("L5", "Commercial Counsel", 185),
        ("L6", "Senior Counsel", 225),
    ]:
        add("Legal", level, title, "US-Tier1", mid)

    notes = [
        ["Effective date", "1 April 2026 (next review April 2027)"],
        ["Owner", "Priya Natarajan, Chief People Officer; maintained by Bob Martinez"],
        ["Benchmark", "Radford Global Technology Survey, 60th percentile, March 2026 cut"],
        ["Band width", "Minimum = 80% of midpoint, maximum = 120% of midpoint"],
        ["New hire offers", "At or below midpoint; above 75th percentile of band requires CPO approval"],
        ["Merit increase pool 2027", "4.0% of base salary (see budget 2027)"],
        ["Compensation ratio target", "Average compa-ratio 0.95-1.05 per team"],
        ["Geo zones", "US-Tier1 = San Francisco/Austin; UK-London; DE-Berlin (Dublin uses DE-Berlin until 2027 review)"],
        ["Confidentiality", "CONFIDENTIAL - People Team only. Do not share salary band data with managers or employees outside the compensation review process."],
    ]
    _xlsx(
        "hr/salary-bands.xlsx",
        "Acme Salary Bands 2026",
        "Bob Martinez",
        [
            (
                "Salary Bands",
                [
                    "job_family",
                    "level",
                    "title",
                    "geo_zone",
                    "currency",
                    "band_min",
                    "band_midpoint",
                    "band_max",
                    "target_bonus_pct",
                    "new_hire_equity_options",
                ],
                rows,
            ),
            ("Notes", ["item", "detail"], notes),
        ],
    )


def performance_review(doc) -> None:
    doc.add_paragraph(
        "CONFIDENTIAL - People Team. Owner: Priya Natarajan (CPO); process lead: Bob Martinez "
        "(HR Business Partner). Applies to the 2026 annual performance review cycle, which "
        "determines April 2027 salary reviews, promotions and bonus multipliers."
    )
    doc.add_heading("1. Timeline", level=1)
    _table(
        doc,
        ["Phase", "Dates", "Who"],
        [
            ["Self-review in Lattice", "2 - 20 November 2026", "All employees"],
            ["Peer feedback (3-5 peers)", "9 - 27 November 2026", "Nominated peers"],
            ["Manager assessment and proposed rating", "30 Nov - 11 Dec 2026", "People managers"],
            ["Calibration sessions", "4 - 22 January 2027", "Managers, HRBPs, department heads"],
            ["Promotion committee", "25 - 29 January 2027", "VPs + CPO"],
            ["Conversations with employees", "1 - 19 February 2027", "Managers"],
            ["Salary and bonus changes effective", "1 April 2027", "Payroll"],
        ],
    )
    doc.add_heading("2. Rating Scale", level=1)
    _table(
        doc,
        ["Rating", "Label", "Expected distribution", "Merit increase guide"],
        [
            ["5", "Exceptional", "~5%", "7-9% of base salary"],
            ["4", "Exceeds expectations", "~20%", "5-6%"],
            ["3", "Meets expectations", "~60%", "3-4%"],
            ["2", "Partially meets", "~12%", "0-1%"],
            ["1", "Does not meet", "~3%", "0%; performance improvement plan"],
        ],
    )
    doc.add_paragraph(
        "The distribution is a guide for calibration, not a forced curve. Increases are also "
        "adjusted by compa-ratio: employees below 0.9 of their salary band midpoint receive up to "
        "2 percentage points extra; those above the band maximum receive a lump sum instead."
    )
    doc.add_heading("3. Calibration", level=1)
    _bullets(
        doc,
        [
            "Calibration groups of 30-80 employees per department, facilitated by an HRBP.",
            "Managers present evidence against the level expectations in the career ladder (L1-L8).",
            "Ratings of 5 and ratings of 1-2 must be discussed individually.",
            "HR checks outcomes for gender and ethnicity gaps before ratings are final.",
        ],
    )
    doc.add_heading("4. Promotions", level=1)
    doc.add_paragraph(
        "Promotion cases are written by the manager using the promotion template and reviewed by "
        "the promotion committee. A promotion (e.g. L4 to L5) normally comes with a 10-12% "
        "compensation increase and moves the employee into the new level's salary band at no less "
        "than the band minimum. In 2025, 11% of employees were promoted."
    )
    doc.add_heading("5. Employees on Leave and New Joiners", level=1)
    doc.add_paragraph(
        "Employees who joined after 1 October 2026 or who were on leave for more than half of the "
        "review period receive a 'not rated' outcome and are eligible for a pro-rated merit "
        "increase at the midpoint of the guide (see the parental leave procedure)."
    )
    doc.add_heading("6. Appeals", level=1)
    doc.add_paragraph(
        "Employees may appeal their rating within 10 business days of their review conversation "
        "by writing to their HR business partner. Appeals are decided by the department head and "
        "an HRBP not involved in the original calibration."
    )


# --------------------------------------------------------------------------- finance


def q3_forecast() -> None:
    # (line item, section, owner, Q3 forecast USD k, Q3 plan USD k, comment)
    lines = [
        ("Subscription - Enterprise North America", "Revenue", "Marcus Bell", 9800, 9600, "Two enterprise expansions closed early"),
        ("Subscription - Enterprise EMEA", "Revenue", "Marcus Bell", 7100, 6900, "Strong renewals in UK"),
        ("Subscription - DACH", "Revenue", "Marcus Bell", 2400, 2500, "Two deals slipped to Q4"),
        ("Subscription - Mid-market", "Revenue", "Marcus Bell", 3600, 3500, ""),
        ("Self-serve tier (beta)", "Revenue", "Product", 300, 400, "Launch delayed to late August"),
        ("Professional services", "Revenue", "Customer Success", 1500, 1300, "Onboarding projects for new logos"),
        ("Usage overage", "Revenue", "Finance", 600, 400, "Higher ingestion volumes"),
        ("Cloud hosting (AWS)", "COGS", "Tomasz Kowalski", 3450, 3400, "Kubernetes migration double-running costs"),
        ("Support staff", "COGS", "Customer Success", 1200, 1180, ""),
        ("Third-party licences", "COGS", "Finance", 440, 420, ""),
        ("Professional services delivery", "COGS", "Customer Success", 380, 350, ""),
        ("Engineering (R&D)", "Opex", "Tomasz Kowalski", 7600, 7700, "Hiring behind plan by 6 heads"),
        ("Sales", "Opex", "Marcus Bell", 5200, 5100, "Travel expenses above budget (DACH)"),
        ("Marketing", "Opex", "Marketing", 2150, 2200, "London customer summit"),
        ("Customer Success", "Opex", "Customer Success", 900, 920, ""),
        ("Finance", "Opex", "Daniel Reyes", 640, 630, "Audit fees"),
        ("Legal", "Opex", "Helen Marsh", 560, 520, "Northwind litigation costs"),
        ("People", "Opex", "Priya Natarajan", 600, 610, ""),
        ("IT", "Opex", "Jonas Weber", 480, 470, ""),
        ("Facilities", "Opex", "Fiona Gallagher", 500, 500, "Dublin deposit in Q4"),
    ]
    split = (0.325, 0.332)  # July and August actuals as a share of the quarter

    def row(name, section, owner, fc, plan, comment):
        jul = round(fc * split[0])
        aug = round(fc * split[1])
        sep = fc - jul - aug
        var = fc - plan
        sign = 1 if section == "Revenue" else -1  # favourable variance is positive
        pct = round(100.0 * var * sign / plan, 1) if plan else 0.0
        return [section, name, owner, jul, aug, sep, fc, plan, var * sign, pct, comment]

    rows = [row(*line) for line in lines]

    def total(section: str, idx: int) -> int:
        return sum(r[idx] for r in rows if r[0] == section)

    def subtotal(label: str, values: list[int], plan: int, comment: str = "", sign: int = 1) -> list:
        fc = values[3]
        fav = (fc - plan) * sign
        return ["Total", label, "Finance", *values[:3], fc, plan, fav, round(100.0 * fav / plan, 1), comment]

    rev = [total("Revenue", i) for i in (3, 4, 5, 6)]
    cogs = [total("COGS", i) for i in (3, 4, 5, 6)]
    opex = [total("Opex", i) for i in (3, 4, 5, 6)]
    gp = [a - b for a, b in zip(rev, cogs)]
    ebitda = [a - b for a, b in zip(gp, opex)]
    rev_plan, cogs_plan, opex_plan = total("Revenue", 7), total("COGS", 7), total("Opex", 7)
    rows += [
        subtotal("Total revenue", rev, rev_plan, "Q3 forecast ahead of plan"),
        subtotal("Total cost of revenue", cogs, cogs_plan, sign=-1),
        subtotal("Gross profit", gp, rev_plan - cogs_plan, f"Gross margin {100.0 * gp[3] / rev[3]:.1f}%"),
        subtotal("Total operating expenses", opex, opex_plan, sign=-1),
        subtotal(
            "EBITDA",
            ebitda,
            rev_plan - cogs_plan - opex_plan,
            f"EBITDA margin {100.0 * ebitda[3] / rev[3]:.1f}%; second positive quarter",
        ),
    ]
    assumptions = [
        ["Forecast version", "Q3 2026 forecast v3, locked 25 September 2026"],
        ["Prepared by", "Alice Chen, Senior Financial Analyst (FP&A)"],
        ["Approved by", "Daniel Reyes, CFO"],
        ["Units", "USD thousands; EUR and GBP converted at plan rates (EUR 1.09, GBP 1.27)"],
        ["July, August", "Actuals from NetSuite after month-end close"],
        ["September", "Forecast based on bookings to 24 September and pipeline weighted at 70%"],
        ["ARR at end of Q3", "USD 103.8M forecast vs. plan USD 101.5M"],
        ["Cash at end of Q3", "USD 62.7M forecast"],
        ["Headcount at end of Q3", "404 forecast vs. plan 411"],
        ["Key risk", "DACH deals slipping to Q4; FX exposure on EUR revenue"],
        ["Key upside", "Usage overage from three large tenants"],
        ["Q4 outlook", "Revenue USD 27.1M, EBITDA USD 1.6M (preliminary)"],
    ]
    _xlsx(
        "finance/q3-forecast.xlsx",
        "Q3 2026 Forecast",
        "Alice Chen",
        [
            (
                "Q3 Forecast",
                [
                    "section",
                    "line_item",
                    "owner",
                    "jul_actual_usd_k",
                    "aug_actual_usd_k",
                    "sep_forecast_usd_k",
                    "q3_forecast_usd_k",
                    "q3_plan_usd_k",
                    "variance_fav_usd_k",
                    "variance_pct",
                    "comment",
                ],
                rows,
            ),
            ("Assumptions", ["item", "detail"], assumptions),
        ],
    )


def audit_findings(doc) -> None:
    doc.add_paragraph(
        "CONFIDENTIAL - Finance and Audit Committee. Summary of the FY2025 external audit "
        "management letter (Deloitte LLP) and the 2026 internal audit programme. Prepared by "
        "Daniel Reyes (CFO) with Alice Chen (FP&A) for the Audit Committee meeting of "
        "8 October 2026."
    )
    doc.add_heading("1. External Audit Opinion", level=1)
    doc.add_paragraph(
        "Deloitte issued an unqualified audit opinion on the FY2025 financial statements on "
        "28 March 2026. Audit fees were GBP 260,000 (FY2024: GBP 235,000). The management letter "
        "raised six findings: no material weaknesses, two significant deficiencies and four "
        "control observations."
    )
    doc.add_heading("2. Findings and Remediation Status", level=1)
    _table(
        doc,
        ["Ref", "Finding", "Severity", "Owner", "Due", "Status"],
        [
            ["F-01", "Revenue recognition: multi-year contracts with ramped pricing were recognised on invoice schedule rather than straight-line (USD 310k timing adjustment).", "Significant deficiency", "Revenue accounting", "30 Jun 2026", "Closed"],
            ["F-02", "Segregation of duties: two NetSuite users could both create vendors and approve vendor payments.", "Significant deficiency", "Alice Chen", "31 Jul 2026", "Closed"],
            ["F-03", "Expense claims: 4% of sampled travel expenses lacked receipts or manager approval.", "Observation", "Alice Chen", "31 Dec 2026", "In progress"],
            ["F-04", "User access reviews for the billing system were not evidenced for Q2 and Q3 2025.", "Observation", "Jonas Weber", "30 Sep 2026", "Closed"],
            ["F-05", "Capitalised software development: timesheet evidence for capitalised engineering hours incomplete.", "Observation", "Tomasz Kowalski", "31 Dec 2026", "In progress"],
            ["F-06", "Lease accounting: Dublin lease commitment not disclosed in subsequent events note.", "Observation", "Daniel Reyes", "31 Mar 2027", "Open"],
        ],
    )
    doc.add_heading("3. Internal Audit Programme 2026", level=1)
    _bullets(
        doc,
        [
            "Procure-to-pay review (completed June): 25 vendor payments above USD 50k tested; 1 missing purchase order.",
            "Travel and expense compliance (in progress): sample of 200 claims from Q3 2026; early results show 37 hotel cap breaches.",
            "Payroll and commissions (planned Q4): commission calculations for DACH sales team.",
            "SOC 2 control testing support (ongoing) with Security Engineering.",
        ],
    )
    doc.add_heading("4. Management Actions", level=1)
    doc.add_paragraph(
        "Finance will implement automated three-way matching in NetSuite by January 2027, enforce "
        "mandatory receipts in Expensify for all amounts above USD 25, and add quarterly evidence "
        "of billing-system access reviews to the SOC 2 control calendar. The Audit Committee is "
        "asked to note the report and approve the closure of findings F-01, F-02 and F-04."
    )
    doc.add_heading("5. FY2026 Audit Planning", level=1)
    doc.add_paragraph(
        "Interim fieldwork starts 16 November 2026; year-end fieldwork 1-26 February 2027. "
        "Planning materiality proposed by Deloitte: USD 950,000 (1% of revenue)."
    )


def finance_review_deck() -> None:
    _pptx(
        "finance/finance-review-q3.pptx",
        "Q3 2026 Finance Review",
        "Daniel Reyes, CFO - Executive Committee, 12 October 2026 - Confidential",
        "Daniel Reyes",
        [
            (
                "Q3 headline numbers",
                [
                    "Revenue USD 25.3M vs. plan 24.6M (+2.8%)",
                    "ARR USD 103.8M, up 31% year on year",
                    "Gross margin 78.4%",
                    "EBITDA USD 1.2M vs. plan 0.6M - second positive quarter",
                    "Cash USD 62.7M",
                ],
            ),
            (
                "Revenue by segment",
                [
                    "Enterprise North America 9.8M (+0.2M vs plan)",
                    "Enterprise EMEA 7.1M (+0.2M)",
                    "DACH 2.4M (-0.1M): two deals slipped to Q4",
                    "Mid-market 3.6M; self-serve beta 0.3M",
                    "Services and overage 2.1M",
                ],
            ),
            (
                "Cost and EBITDA drivers",
                [
                    "Cloud hosting 3.45M: Kubernetes migration double-running",
                    "Engineering opex under plan: hiring 6 heads behind",
                    "Legal costs up: Northwind litigation",
                    (1, "Reserve of USD 650k proposed for Q3 close"),
                ],
            ),
            (
                "Travel expenses and T&E",
                [
                    "Q3 travel expenses USD 960k; total T&E USD 1.41M (+11% QoQ)",
                    "6% over quarterly T&E budget",
                    "37 hotel cap breaches, 9 unapproved business-class flights",
                    "Actions: hard block in Navan, London hotel rates, 90-day auto-reject",
                ],
            ),
            (
                "Q4 outlook and 2027 budget",
                [
                    "Q4 revenue forecast USD 27.1M; FY2026 revenue 96.4M",
                    "FY2027 budget: revenue 124M, EBITDA 9.66M (7.8% margin)",
                    "Board approval of budget on 19 November",
                ],
            ),
            (
                "Decisions needed",
                [
                    "Approve Q3 litigation reserve",
                    "Approve AWS commit top-up of USD 1.2M",
                    "Endorse the corporate development proposal (details restricted to the insider list)",
                ],
            ),
        ],
    )


# --------------------------------------------------------------------------- engineering


def roadmap(doc) -> None:
    doc.add_paragraph(
        "Engineering - internal. Owner: Tomasz Kowalski (CTO). Draft for planning, version 1.3, "
        "2 October 2026. Dates are targets, not commitments to customers."
    )
    doc.add_heading("Themes", level=1)
    _bullets(
        doc,
        [
            "Reliability: meet the 99.95% API availability SLO every month; halve SEV1 incidents.",
            "Atlas Insights: embedded analytics general availability.",
            "Scale: 5 billion events per day per region without manual ClickHouse rebalancing.",
            "Developer productivity: deploy to production in under 15 minutes.",
        ],
    )
    doc.add_heading("Q1 2027", level=1)
    _bullets(
        doc,
        [
            "Finish Kubernetes migration: report renderer and billing batch jobs off ECS.",
            "Kafka cell architecture: two clusters per region to reduce blast radius.",
            "Auto-declared SEV1 and incident bot in Slack (postmortem action INC-2026-0412).",
            "Atlas Insights private preview with 20 design partners.",
        ],
    )
    doc.add_heading("Q2 2027", level=1)
    _bullets(
        doc,
        [
            "Atlas Insights GA: embeddable React and iframe SDKs, theming, row-level security.",
            "Rewrite of the monolithic reports service in Go.",
            "Self-serve tier: usage metering and Stripe billing integration.",
        ],
    )
    doc.add_heading("Q3 2027", level=1)
    _bullets(
        doc,
        [
            "Automated ClickHouse shard rebalancing.",
            "Customer-managed encryption keys (BYOK) via AWS KMS for enterprise tenants.",
            "On-call load reduction: target fewer than 2 out-of-hours pages per week per rotation.",
        ],
    )
    doc.add_heading("Q4 2027", level=1)
    _bullets(
        doc,
        [
            "Fourth region: ap-southeast-2 (Sydney) - subject to sales pipeline.",
            "Query engine v4 with vectorised execution.",
        ],
    )
    doc.add_heading("Staffing", level=1)
    doc.add_paragraph(
        "Engineering grows from 168 to 206 people in 2027 (38 net new roles): 9 SRE and platform "
        "engineers, 8 for Atlas Insights, 6 ML engineers, 5 security engineers and 10 across core "
        "teams. The Berlin office hosts Platform and Data Infrastructure; Dublin adds a second "
        "on-call follow-the-sun hub."
    )
    doc.add_heading("Dependencies and Risks", level=1)
    _bullets(
        doc,
        [
            "AWS enterprise discount programme commit assumes the Kubernetes migration finishes in Q1.",
            "BYOK requires legal review of the data processing addendum.",
            "Senior SRE hiring in Berlin is the main delivery risk.",
        ],
    )


# --------------------------------------------------------------------------- legal


def contract_template(doc) -> None:
    doc.add_paragraph(
        "TEMPLATE - Legal use only. Acme Master Subscription Agreement (MSA) template v7.2, "
        "approved by Helen Marsh, General Counsel, 1 May 2026. Replace all bracketed fields. "
        "Any deviation from the fallback positions in the Legal playbook requires approval from "
        "Legal (Dave Whitfield for liability and indemnity changes)."
    )
    doc.add_paragraph(
        "This Master Subscription Agreement (the \"Agreement\") is entered into on [EFFECTIVE DATE] "
        "between Acme Corp, a Delaware corporation with offices at 1 Southwark Bridge Road, London "
        "SE1 9HL (\"Acme\"), and [CUSTOMER LEGAL NAME], a [JURISDICTION] [ENTITY TYPE] with its "
        "registered office at [ADDRESS] (\"Customer\")."
    )
    doc.add_heading("1. Definitions", level=1)
    _bullets(
        doc,
        [
            "\"Services\" means the Atlas software-as-a-service platform described in an Order Form.",
            "\"Customer Data\" means data submitted by or for Customer to the Services.",
            "\"Order Form\" means an ordering document signed by both parties referencing this Agreement.",
        ],
    )
    doc.add_heading("2. Subscription and Use", level=1)
    doc.add_paragraph(
        "Acme grants Customer a non-exclusive, non-transferable right to access and use the "
        "Services during the Subscription Term for its internal business purposes, subject to the "
        "user and event limits in the Order Form."
    )
    doc.add_heading("3. Fees and Payment", level=1)
    doc.add_paragraph(
        "Fees are invoiced annually in advance and payable within [30] days of invoice. Late "
        "amounts bear interest at 1% per month. Acme may increase fees on renewal by no more than "
        "[7]% per year with 60 days' notice."
    )
    doc.add_heading("4. Confidentiality", level=1)
    doc.add_paragraph(
        "Each party will protect the other's Confidential Information with at least reasonable "
        "care and use it only to perform this Agreement. This clause survives for five years after "
        "termination (indefinitely for trade secrets)."
    )
    doc.add_heading("5. Data Protection", level=1)
    doc.add_paragraph(
        "The Data Processing Addendum at Exhibit B applies to personal data in Customer Data. Acme "
        "hosts Customer Data in the region selected in the Order Form (EU, US or Frankfurt)."
    )
    doc.add_heading("6. Warranties and Service Levels", level=1)
    doc.add_paragraph(
        "Acme warrants that the Services will perform materially in accordance with the "
        "Documentation and will be available 99.9% of each month (99.95% for Enterprise Plus), "
        "with service credits as set out in Exhibit C as Customer's sole remedy for availability "
        "failures."
    )
    doc.add_heading("7. Limitation of Liability", level=1)
    doc.add_paragraph(
        "Except for breach of confidentiality, indemnification obligations and Customer's payment "
        "obligations, each party's total liability is capped at the fees paid or payable in the "
        "[12] months preceding the claim. Neither party is liable for indirect or consequential "
        "damages, lost profits or loss of data."
    )
    doc.add_heading("8. Term and Termination", level=1)
    doc.add_paragraph(
        "The Agreement continues while any Order Form is in effect. Subscriptions renew for "
        "successive [12]-month terms unless either party gives 60 days' notice. Either party may "
        "terminate for material breach not cured within 30 days."
    )
    doc.add_heading("9. Governing Law", level=1)
    doc.add_paragraph(
        "[England and Wales / State of New York / Ireland], with exclusive jurisdiction of its "
        "courts."
    )
    doc.add_heading("Signature Block", level=1)
    _table(
        doc,
        ["", "Acme Corp", "[CUSTOMER LEGAL NAME]"],
        [["Name", "", ""], ["Title", "", ""], ["Signature", "", ""], ["Date", "", ""]],
    )


# --------------------------------------------------------------------------- main


def main() -> None:
    _docx("company/office-locations.docx", "Acme Office Locations Guide", "Fiona Gallagher", office_locations)
    strategy_deck()
    salary_bands()
    _docx(
        "hr/performance-review-process.docx",
        "Performance Review Process 2026",
        "Bob Martinez",
        performance_review,
    )
    q3_forecast()
    _docx("finance/audit-findings.docx", "Audit Findings and Remediation Report", "Daniel Reyes", audit_findings)
    finance_review_deck()
    _docx("engineering/roadmap-2027.docx", "Engineering Roadmap 2027", "Tomasz Kowalski", roadmap)
    _docx(
        "legal/contract-template.docx",
        "Master Subscription Agreement Template",
        "Helen Marsh",
        contract_template,
    )
    for path in sorted(ROOT.rglob("*")):
        if path.suffix in {".docx", ".pptx", ".xlsx"}:
            print(f"{path.relative_to(ROOT)}\t{path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
