"""The fixed vocabulary of the demo practice: its facilities, payers, fee schedule, diagnosis
code lists and name pools. Plain data; :mod:`claims_pipeline.demo.seed` draws from it.

Every person, phone number and address is made up: phone numbers use the 555-01xx range that is
reserved for fiction. Diagnosis codes are billable ICD-10-CM codes (checked by the demo tests);
procedure codes are CPT/HCPCS codes with plausible charges of a Texas family practice.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

# The planted "retired diagnosis" defect: low back pain, a billable code until 2021-10-01, when
# it became the parent of M54.50/M54.51/M54.59.
RETIRED_ICD10 = "M54.5"
RETIRED_ICD10_REPLACES = "M54.50"


@dataclass(frozen=True)
class Facility:
    name: str
    street: str
    city: str
    postal_code: str
    place_of_service: str
    state: str = "TX"


FACILITIES = (
    Facility(
        "Riverside Family Medicine - Austin",
        "4100 Medical Pkwy, Suite 200",
        "Austin",
        "78756",
        "11",
    ),
    Facility(
        "Riverside Family Medicine - Round Rock",
        "2400 Sunrise Rd, Suite 110",
        "Round Rock",
        "78664",
        "11",
    ),
    Facility(
        "Riverside Family Medicine - San Antonio",
        "7703 Wurzbach Rd, Suite 300",
        "San Antonio",
        "78229",
        "11",
    ),
    Facility(
        "Riverside Family Medicine - Georgetown",
        "1015 W University Ave",
        "Georgetown",
        "78628",
        "11",
    ),
    Facility("Riverside Outpatient Center", "919 E 32nd St, Building B", "Austin", "78705", "22"),
    Facility("Riverside Virtual Care", "4100 Medical Pkwy, Suite 210", "Austin", "78756", "02"),
)
OFFICE_FACILITIES = tuple(i for i, f in enumerate(FACILITIES) if f.place_of_service == "11")
OUTPATIENT_FACILITY = next(i for i, f in enumerate(FACILITIES) if f.place_of_service == "22")
TELEHEALTH_FACILITY = next(i for i, f in enumerate(FACILITIES) if f.place_of_service == "02")

#: Patients' home towns near the practice, with some of their ZIP codes.
HOME_TOWNS = (
    ("Austin", ("78701", "78702", "78704", "78723", "78731", "78745", "78748", "78757")),
    ("Round Rock", ("78664", "78665", "78681")),
    ("Georgetown", ("78626", "78628", "78633")),
    ("Pflugerville", ("78660",)),
    ("Cedar Park", ("78613",)),
    ("San Antonio", ("78209", "78229", "78240", "78249", "78258")),
)


def _words(text: str, separator: str | None = None) -> tuple[str, ...]:
    return tuple(word.strip() for word in text.split(separator))


STREETS = _words(
    "Oak|Maple|Cedar|Pecan|Live Oak|Mesquite|Bluebonnet|Lamar|Guadalupe|Riverside|Sunset|"
    "Hillcrest|Willow|Elm|Magnolia|Cypress|Lakeview|Meadow|Ranch|Brazos|Pine|Cherry|Shoal Creek|"
    "Barton|Canyon",
    "|",
)
STREET_KINDS = ("St", "Ave", "Dr", "Ln", "Rd", "Blvd", "Ct", "Trl", "Way", "Cv")


@dataclass(frozen=True)
class Payer:
    name: str
    phone: str
    # Member id pattern: '#' a digit, 'A' an MBI letter, 'N' a digit or MBI letter, '1' a
    # digit 1-9; other characters are literal.
    member_id: str
    plan: str = "commercial"  # or "medicare", "medicaid": who the payer insures


PAYERS = (
    Payer("Aetna", "(800) 555-0123", "W#########"),
    Payer("Blue Cross Blue Shield of Texas", "1-800-555-0147", "ZGP#########"),
    Payer("Blue Cross Blue Shield of Illinois", "800.555.0199", "XOD#########"),
    Payer("UnitedHealthcare", "(877) 555-0110", "MEM#########"),
    Payer("Cigna", "800-555-0164", "U#########"),
    Payer("Humana", "+1 800 555 0172", "H########"),
    # Medicare's member id is the Medicare Beneficiary Identifier.
    Payer("Medicare Part B", "1-855-555-0133", "1AN#AN#AA##", "medicare"),
    Payer("Texas Medicaid", "(800) 555-0188", "5########", "medicaid"),
    Payer("Molina Healthcare of Texas", "8665550151", "MEM########", "medicaid"),
    Payer("Superior HealthPlan", "(800) 555-0192", "MEM#########", "medicaid"),
    Payer("Oscar Health", "855.555.0106", "OSC########"),
    Payer("TRICARE West", "1-844-555-0115", "#########"),
)
#: Indexes into PAYERS of the payers of each plan kind.
PLANS = {
    plan: tuple(i for i, payer in enumerate(PAYERS) if payer.plan == plan)
    for plan in ("commercial", "medicare", "medicaid")
}
#: Letters a Medicare Beneficiary Identifier may use (no S, L, O, I, B, Z).
MBI_LETTERS = "ACDEFGHJKMNPQRTUVWXY"

CREDENTIALS = (("MD", 55), ("DO", 15), ("NP", 15), ("PA-C", 10), (None, 5))

FEMALE_NAMES = _words("""
    Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Lisa Nancy Betty
    Sandra Ashley Emily Donna Michelle Carol Amanda Melissa Deborah Stephanie Rebecca Laura Sharon
    Cynthia Amy Kathleen Angela Brenda Emma Olivia Sophia Isabella Mia Camila Valeria Guadalupe
    Rosa Maria Lucia Ximena Priya Aisha Mei Ngoc Hannah Abigail Grace Chloe Zoe Leah Naomi Fatima
    Yesenia Alma Dolores Irene Gloria
""")
MALE_NAMES = _words("""
    James Robert John Michael David William Richard Joseph Thomas Christopher Charles Daniel
    Matthew Anthony Mark Donald Steven Andrew Paul Joshua Kenneth Kevin Brian George Timothy Ronald
    Jason Edward Jeffrey Ryan Jacob Liam Noah Ethan Mateo Santiago Diego Jose Juan Luis Carlos
    Miguel Arjun Omar Wei Minh Tyler Austin Caleb Elijah Isaiah Gabriel Samuel Benjamin Lucas
    Hector Raul Ernesto Frank Walter
""")
LAST_NAMES = _words("""
    Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez
    Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris
    Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill
    Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Gomez Phillips
    Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart Morris Morales Murphy Cook Rogers
    Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed Kelly Howard Ramos Kim Cox Ward Richardson
    Watson Brooks Chavez Wood James Bennett Gray Mendoza Ruiz Hughes Price Alvarez Castillo Sanders
    Patel Myers Long Ross Foster Jimenez Tran Chen Shah O'Brien Villarreal Dubois Okafor Kowalski
    Haddad Núñez Peña
""")

#: Charge per unit; a line's amount is this times its units.
FEES: dict[str, Decimal] = {
    code: Decimal(fee)
    for code, fee in {
        # office visits: new patient, established patient
        "99202": "110.00",
        "99203": "170.00",
        "99204": "255.00",
        "99205": "330.00",
        "99212": "95.00",
        "99213": "150.00",
        "99214": "220.00",
        "99215": "300.00",
        # preventive visits by age band; Medicare annual wellness visits
        "99393": "180.00",
        "99394": "195.00",
        "99395": "205.00",
        "99396": "225.00",
        "99397": "245.00",
        "G0438": "175.00",
        "G0439": "135.00",
        # lab, tests and procedures
        "36415": "15.00",
        "85025": "35.00",
        "80053": "45.00",
        "80061": "40.00",
        "83036": "30.00",
        "84443": "50.00",
        "81002": "12.00",
        "87086": "40.00",
        "87880": "25.00",
        "87804": "30.00",
        "93000": "60.00",
        "71046": "110.00",
        "96127": "25.00",
        "20610": "180.00",
        "96372": "40.00",
        # immunisations and drugs (J codes are billed per unit of drug)
        "90471": "30.00",
        "90686": "45.00",
        "90715": "60.00",
        "J1100": "5.00",
        "J1030": "25.00",
    }.items()
}
NEW_VISITS = (("99202", 15), ("99203", 45), ("99204", 30), ("99205", 10))
ESTABLISHED_VISITS = (("99212", 10), ("99213", 45), ("99214", 35), ("99215", 10))


def preventive_visit(age: int, medicare: bool) -> str:
    """The preventive visit code for a patient's age (and Medicare's wellness visit)."""
    if medicare:
        return "G0439"
    if age < 12:
        return "99393"
    if age < 18:
        return "99394"
    if age < 40:
        return "99395"
    return "99396" if age < 65 else "99397"


@dataclass(frozen=True)
class Procedure:
    """A charge line a visit's problem may bring: with ``chance``, for one of ``units`` units,
    optionally with a modifier and a companion line (the drug of an injection)."""

    hcpcs_code: str
    chance: float
    units: tuple[int, ...] = (1,)
    modifiers: str | None = None
    companion: Procedure | None = None  # billed with it (the drug of an injection, ...)


@dataclass(frozen=True)
class Problem:
    """A reason for a visit: its first diagnosis and the work-up it tends to bring."""

    icd10_code: str
    workup: tuple[Procedure, ...] = ()


@dataclass(frozen=True)
class VisitKind:
    name: str
    weight: int
    problems: tuple[Problem, ...]
    other_diagnoses: tuple[str, ...]
    min_age: int = 0


LABS = (Procedure("36415", 0.7), Procedure("80053", 0.4), Procedure("85025", 0.3))
DEPO_MEDROL = Procedure("J1030", 1.0, units=(1, 1, 2))  # methylprednisolone 40 mg
DEXAMETHASONE = Procedure("J1100", 1.0, units=(4, 8, 10))  # dexamethasone 1 mg
BOTH_KNEES = Procedure(
    "20610", 1.0, modifiers="59:LT", companion=Procedure("J1030", 1.0, units=(2,))
)
STEROID_SHOT = (Procedure("96372", 0.35, companion=DEPO_MEDROL),)

VISIT_KINDS = (
    VisitKind(
        "chronic",
        30,
        (
            Problem("E11.9", (Procedure("83036", 0.8), *LABS)),
            Problem("E11.65", (Procedure("83036", 0.9), *LABS)),
            Problem("I10", (Procedure("80053", 0.4), Procedure("93000", 0.15))),
            Problem("E78.5", (Procedure("36415", 0.7), Procedure("80061", 0.7))),
            Problem("E78.2", (Procedure("36415", 0.7), Procedure("80061", 0.7))),
            Problem("E03.9", (Procedure("36415", 0.7), Procedure("84443", 0.8))),
            Problem("N18.30", (Procedure("36415", 0.8), Procedure("80053", 0.8))),
            Problem("I25.10", (Procedure("93000", 0.4),)),
            Problem("J44.9"),
            Problem("R73.03", (Procedure("36415", 0.7), Procedure("83036", 0.8))),
        ),
        ("I10", "E78.5", "E66.9", "Z79.899", "E55.9", "G47.00", "Z68.30", "K21.9"),
        min_age=30,
    ),
    VisitKind(
        "acute",
        30,
        (
            Problem("J06.9", (Procedure("87804", 0.3),)),
            Problem("J02.9", (Procedure("87880", 0.8),)),
            Problem("J01.90", (Procedure("96372", 0.3, companion=DEXAMETHASONE),)),
            Problem("J20.9", (Procedure("71046", 0.2), Procedure("87804", 0.2))),
            Problem("R05.9", (Procedure("71046", 0.15),)),
            Problem("B34.9", (Procedure("87804", 0.4),)),
            Problem("N39.0", (Procedure("81002", 0.9), Procedure("87086", 0.5))),
            Problem("H10.9"),
            Problem("R50.9", (Procedure("36415", 0.5), Procedure("85025", 0.5))),
            Problem("L30.9"),
        ),
        ("R05.9", "R50.9", "J30.9", "R51.9", "R11.0", "J45.909"),
    ),
    VisitKind(
        "musculoskeletal",
        12,
        (
            Problem("M54.50", STEROID_SHOT),
            Problem("M54.59", STEROID_SHOT),
            Problem("M54.16", STEROID_SHOT),
            Problem("M54.2"),
            Problem("M25.561", (Procedure("20610", 0.4, modifiers="RT"),)),
            Problem("M25.562", (Procedure("20610", 0.4, modifiers="LT"),)),
            Problem("M17.11", (Procedure("20610", 0.6, modifiers="RT", companion=DEPO_MEDROL),)),
            Problem("M17.12", (Procedure("20610", 0.6, modifiers="LT", companion=DEPO_MEDROL),)),
            # Both knees injected: the second site carries 59 (distinct procedure) as well.
            Problem("M17.0", (Procedure("20610", 0.6, modifiers="RT", companion=BOTH_KNEES),)),
            Problem("M25.511"),
            Problem("M79.604"),
        ),
        ("E66.9", "G47.00", "M54.2", "I10"),
        min_age=18,
    ),
    VisitKind(
        "behavioral",
        8,
        (Problem("F41.1"), Problem("F32.A"), Problem("F41.9"), Problem("G47.00")),
        ("G47.00", "R53.83", "F41.9"),
        min_age=12,
    ),
    VisitKind(
        "cardiac",
        5,
        (
            Problem("R07.9", (Procedure("93000", 0.9),)),
            Problem("R00.2", (Procedure("93000", 0.9),)),
            Problem("I48.91", (Procedure("93000", 0.6), Procedure("85025", 0.3))),
            Problem("R06.02", (Procedure("93000", 0.5), Procedure("71046", 0.3))),
        ),
        ("I10", "E78.5", "R53.83", "Z79.01"),
        min_age=30,
    ),
    VisitKind(
        "digestive",
        5,
        (
            Problem("K21.9"),
            Problem("K59.00"),
            Problem("R10.9", (Procedure("36415", 0.6), Procedure("85025", 0.6))),
            Problem("R11.2", (Procedure("36415", 0.5), Procedure("80053", 0.5))),
        ),
        ("R11.0", "E66.9", "K21.9"),
    ),
    VisitKind("preventive", 12, (), ("Z13.220", "Z13.1", "Z71.3")),
    VisitKind("immunization", 3, (Problem("Z23"),), ()),
)
# Diagnoses of preventive visits, by whether the exam found something.
ADULT_EXAM = ("Z00.00", "Z00.01")
CHILD_EXAM = ("Z00.129", "Z00.121")
SCREENING_LABS = {"Z13.220": "80061", "Z13.1": "83036"}
FLU_SHOT = ("90471", "90686")
TDAP_SHOT = ("90471", "90715")

#: Every diagnosis code the demo writes (except the planted retired one).
ALL_ICD10_CODES: frozenset[str] = frozenset(
    {problem.icd10_code for kind in VISIT_KINDS for problem in kind.problems}
    | {code for kind in VISIT_KINDS for code in kind.other_diagnoses}
    | set(ADULT_EXAM)
    | set(CHILD_EXAM)
    | {"Z23"}
)
