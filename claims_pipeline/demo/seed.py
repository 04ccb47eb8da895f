"""Deterministic synthetic EHR data in the reference schema: a Texas family practice with
providers, payers, patients, coverages and a run of days of encounters.

``seed_demo`` with the same arguments writes the same rows on any database. About 90 % of
encounters are finalized (billable); about 3 % of those carry exactly one planted defect that
claim validation must catch, and :class:`SeedSummary` says which encounter has which, so a test
can assert that exactly those are rejected. Everything else is meant to become a valid claim.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from stdnum import luhn

from claims_pipeline.demo import catalog
from claims_pipeline.demo.catalog import Procedure
from claims_pipeline.errors import ConfigurationError
from claims_pipeline.rules.reasons import ReasonCode
from claims_pipeline.sources import reference
from claims_pipeline.sources.reference import metadata

PROVIDER_COUNT = 40
ENCOUNTERS_PER_PATIENT = 3  # sets the patient panel size for a run of days
BILLABLE_SHARE = 0.90
DEFECT_SHARE = 0.03  # of billable encounters
LINE_PROVIDER_SHARE = 0.02  # billable encounters whose procedure is rendered by another provider
MAX_LINES = 4
MAX_DIAGNOSES = 4

MISSING_MEMBER_ID = "missing_member_id"
RETIRED_DIAGNOSIS_CODE = "retired_diagnosis_code"
INVALID_NPI = "invalid_npi"
ZERO_UNITS = "zero_units"
DEFECTS = (MISSING_MEMBER_ID, RETIRED_DIAGNOSIS_CODE, INVALID_NPI, ZERO_UNITS)

#: The reason claim validation is expected to give for each planted defect.
DEFECT_REASONS: dict[str, ReasonCode] = {
    MISSING_MEMBER_ID: ReasonCode.MISSING_FIELD,
    RETIRED_DIAGNOSIS_CODE: ReasonCode.ICD_NOT_BILLABLE,
    INVALID_NPI: ReasonCode.NPI_INVALID,
    ZERO_UNITS: ReasonCode.UNITS_INVALID,
}

_FLUSH_ROWS = 20_000  # buffered rows per round of inserts: bounds memory for long runs
_PROCEDURES_WITH_E_M_MODIFIER = {"20610", "96372"}  # an E/M beside these needs modifier 25
_BLOOD_TESTS = {"80053", "85025", "80061", "83036", "84443"}
_OFFICE_VISITS = {code for code, _ in catalog.NEW_VISITS + catalog.ESTABLISHED_VISITS}


@dataclass(frozen=True)
class SeedSummary:
    """What :func:`seed_demo` wrote. ``charge_lines`` counts every charge row,
    ``billable_charge_lines`` those of finalized encounters (the rows an extract of the whole
    range yields). ``defects`` maps an encounter id, as the source adapter reports it
    (``encounter_id`` of LINE_SCHEMA), to the defect planted in it."""

    patients: int
    providers: int
    encounters: int
    billable_encounters: int
    charge_lines: int
    billable_charge_lines: int
    first_service_date: date
    last_service_date: date
    defects: dict[str, str]


@dataclass(frozen=True)
class _Patient:
    id: int
    date_of_birth: date
    medicare: bool


@dataclass(frozen=True)
class _Provider:
    id: int
    facility: int  # index into catalog.FACILITIES
    mid_level: bool  # NP or PA: renders procedures for a physician's patient


def _weighted(rng: random.Random, choices: tuple[tuple[Any, int], ...]) -> Any:
    values, weights = zip(*choices, strict=True)
    return rng.choices(values, weights)[0]


def _age(date_of_birth: date, on: date) -> int:
    return (
        on.year
        - date_of_birth.year
        - ((on.month, on.day) < (date_of_birth.month, date_of_birth.day))
    )


def valid_npi(rng: random.Random) -> str:
    """A random NPI with a correct check digit (Luhn over 80840 + the first nine digits)."""
    digits = rng.choice("12") + "".join(rng.choices("0123456789", k=8))
    return digits + luhn.calc_check_digit("80840" + digits)


class _Rows:
    """Rows waiting to be inserted, written table by table in foreign-key order."""

    def __init__(self) -> None:
        self.pending: dict[str, list[dict[str, Any]]] = {t.name: [] for t in metadata.sorted_tables}
        self.size = 0

    def add(self, table: sa.Table, row: dict[str, Any]) -> None:
        self.pending[table.name].append(row)
        self.size += 1

    def flush(self, conn: sa.Connection) -> None:
        for table in metadata.sorted_tables:
            rows = self.pending[table.name]
            if rows:
                conn.execute(table.insert(), rows)  # executemany: one round trip per batch
                rows.clear()
        self.size = 0


class _Practice:
    """Draws the practice from one random.Random, in a fixed order, so a seed fixes the data."""

    def __init__(self, rng: random.Random, first_date: date, last_date: date) -> None:
        self.rng = rng
        self.first_date = first_date
        self.last_date = last_date
        self.rows = _Rows()
        self.patients: list[_Patient] = []
        self.providers: list[_Provider] = []
        self.npis: set[str] = set()
        self.next_id = {"patients": 1, "providers": 1, "coverages": 1, "charges": 1}

    def _id(self, table: str) -> int:
        value = self.next_id[table]
        self.next_id[table] = value + 1
        return value

    # -- people and payers ------------------------------------------------------------------

    def add_facilities_and_payers(self) -> None:
        for index, facility in enumerate(catalog.FACILITIES, start=1):
            self.rows.add(
                reference.facilities,
                {
                    "id": index,
                    "name": facility.name,
                    "street": facility.street,
                    "city": facility.city,
                    "state": facility.state,
                    "postal_code": facility.postal_code,
                    "place_of_service": facility.place_of_service,
                },
            )
        for index, payer in enumerate(catalog.PAYERS, start=1):
            self.rows.add(reference.payers, {"id": index, "name": payer.name, "phone": payer.phone})

    def add_provider(self, npi: str | None = None) -> _Provider:
        """A provider with a unique valid NPI, or with ``npi`` as given."""
        rng = self.rng
        credential = _weighted(rng, catalog.CREDENTIALS)
        first_name = rng.choice(catalog.FEMALE_NAMES + catalog.MALE_NAMES)
        if npi is None:
            npi = valid_npi(rng)
            while npi in self.npis:
                npi = valid_npi(rng)
        self.npis.add(npi)
        provider = _Provider(
            self._id("providers"),
            rng.choice(catalog.OFFICE_FACILITIES),
            credential in ("NP", "PA-C"),
        )
        self.rows.add(
            reference.providers,
            {
                "id": provider.id,
                "first_name": first_name,
                "last_name": rng.choice(catalog.LAST_NAMES),
                "credential": credential,
                "npi": npi,
            },
        )
        return provider

    def member_id(self, payer: int) -> str:
        rng = self.rng
        pattern = catalog.PAYERS[payer].member_id
        pools = {
            "#": "0123456789",
            "1": "123456789",
            "A": catalog.MBI_LETTERS,
            "N": "0123456789" + catalog.MBI_LETTERS,
        }
        return "".join(rng.choice(pools[c]) if c in pools else c for c in pattern)

    def add_coverage(
        self,
        patient_id: int,
        payer: int,
        priority: str,
        start: date,
        end: date | None,
        member_id: str | None,
    ) -> None:
        self.rows.add(
            reference.coverages,
            {
                "id": self._id("coverages"),
                "patient_id": patient_id,
                "payer_id": payer + 1,
                "member_id": member_id,
                "priority": priority,
                "effective_from": start,
                "effective_to": end,
            },
        )

    def add_patient(self, member_id_missing: bool = False) -> _Patient:
        """A patient with a primary coverage in force on every date of the run (sometimes two
        in a row after a change of plan) and sometimes a secondary one. A patient whose member
        id is missing is kept out of the panel: only the encounter it was made for is wrong."""
        rng = self.rng
        sex = _weighted(rng, (("Female", 52), ("Male", 47), ("Unknown", 1)))
        names = {"Female": catalog.FEMALE_NAMES, "Male": catalog.MALE_NAMES}.get(
            sex, catalog.FEMALE_NAMES + catalog.MALE_NAMES
        )
        low, high = _weighted(
            rng, (((2, 11), 8), ((12, 17), 7), ((18, 39), 25), ((40, 64), 35), ((65, 92), 25))
        )
        age = rng.randint(low, high)
        date_of_birth = self.first_date - timedelta(days=age * 365 + rng.randrange(365) + 1)
        town, zip_codes = rng.choice(catalog.HOME_TOWNS)
        patient = _Patient(self._id("patients"), date_of_birth, medicare=age >= 65)
        self.rows.add(
            reference.patients,
            {
                "id": patient.id,
                "first_name": rng.choice(names),
                "last_name": rng.choice(catalog.LAST_NAMES),
                "date_of_birth": date_of_birth,
                "sex": sex,
                "street": f"{rng.randint(100, 9999)} {rng.choice(catalog.STREETS)} "
                f"{rng.choice(catalog.STREET_KINDS)}",
                "city": town,
                "state": "TX",
                "postal_code": rng.choice(zip_codes),
            },
        )
        if patient.medicare:
            plans = catalog.PLANS["medicare"]
        elif (age < 18 and rng.random() < 0.45) or rng.random() < 0.15:
            plans = catalog.PLANS["medicaid"]
        else:
            plans = catalog.PLANS["commercial"]
        start = max(date_of_birth, self.first_date - timedelta(days=rng.randint(30, 3000)))
        payer = rng.choice(plans)
        if not patient.medicare and rng.random() < 0.12:
            # A change of plan: the old coverage ends the day before the new one starts.
            switch = self.first_date + timedelta(
                days=rng.randint(-180, (self.last_date - self.first_date).days)
            )
            switch = max(switch, start + timedelta(days=1))
            self.add_coverage(
                patient.id,
                payer,
                "primary",
                start,
                switch - timedelta(days=1),
                None if member_id_missing else self.member_id(payer),
            )
            start, payer = switch, rng.choice([p for p in plans if p != payer] or plans)
        # Some plans carry the end of the next plan year; most are open-ended.
        end = date(self.last_date.year + 1, 12, 31) if rng.random() < 0.1 else None
        member_id = None if member_id_missing else self.member_id(payer)
        self.add_coverage(patient.id, payer, "primary", start, end, member_id)
        if rng.random() < (0.3 if patient.medicare else 0.05):
            secondary = rng.choice(catalog.PLANS["commercial"])
            self.add_coverage(
                patient.id, secondary, "secondary", start, None, self.member_id(secondary)
            )
        if not member_id_missing:
            self.patients.append(patient)
        return patient

    # -- encounters -------------------------------------------------------------------------

    def visit(
        self, patient: _Patient, service_date: date, forced_problem: str | None
    ) -> tuple[list[str], list[dict[str, Any]]]:
        """Diagnoses (in sequence) and charge lines (without ids) of one visit."""
        rng = self.rng
        age = _age(patient.date_of_birth, service_date)
        if forced_problem is not None:
            kind = next(
                k
                for k in catalog.VISIT_KINDS
                if any(p.icd10_code == forced_problem for p in k.problems)
            )
        else:
            kinds = tuple((k, k.weight) for k in catalog.VISIT_KINDS if k.min_age <= age)
            kind = _weighted(rng, kinds)
        if kind.name == "preventive":
            return self.preventive_visit(patient, age, service_date)
        if kind.name == "immunization":
            return ["Z23"], [self.line(code, ["Z23"]) for code in self.vaccine(service_date)]

        problem = next(
            (p for p in kind.problems if p.icd10_code == forced_problem), None
        ) or rng.choice(kind.problems)
        others = [code for code in kind.other_diagnoses if code != problem.icd10_code]
        diagnoses = [problem.icd10_code, *rng.sample(others, rng.randint(0, min(3, len(others))))]
        procedures: list[Procedure] = []
        for procedure in problem.workup:
            if rng.random() < procedure.chance:
                companion: Procedure | None = procedure
                while companion is not None:
                    procedures.append(companion)
                    companion = companion.companion
        if _BLOOD_TESTS & {p.hcpcs_code for p in procedures} and not any(
            p.hcpcs_code == "36415" for p in procedures
        ):
            procedures.insert(0, Procedure("36415", 1.0))
        procedures = procedures[: MAX_LINES - 1]
        codes = {p.hcpcs_code for p in procedures}

        visits = catalog.NEW_VISITS if rng.random() < 0.12 else catalog.ESTABLISHED_VISITS
        e_m_modifier = "25" if codes & _PROCEDURES_WITH_E_M_MODIFIER else None
        lines = [self.line(_weighted(rng, visits), diagnoses[:MAX_DIAGNOSES], e_m_modifier)]
        for procedure in procedures:
            modifiers = procedure.modifiers
            if procedure.hcpcs_code == "96372" and "20610" in codes:
                modifiers = "59"  # a second, distinct injection on the same day
            elif procedure.hcpcs_code.startswith("J") and patient.medicare:
                modifiers = "JZ"  # Medicare: no drug wasted from a single-dose vial
            # Work-up lines point at the problem that brought the patient in.
            lines.append(
                self.line(
                    procedure.hcpcs_code, diagnoses[:1], modifiers, rng.choice(procedure.units)
                )
            )
        return diagnoses, lines

    def preventive_visit(
        self, patient: _Patient, age: int, service_date: date
    ) -> tuple[list[str], list[dict[str, Any]]]:
        rng = self.rng
        exam = rng.choice(catalog.ADULT_EXAM if age >= 18 else catalog.CHILD_EXAM)
        diagnoses = [exam]
        screenings = [code for code in catalog.SCREENING_LABS if age >= 18 and rng.random() < 0.35]
        diagnoses += screenings
        vaccinated = rng.random() < 0.4
        if vaccinated:
            diagnoses.append("Z23")
        lines = [self.line(catalog.preventive_visit(age, patient.medicare), [exam])]
        if screenings:
            lines.append(self.line("36415", screenings[:1]))
            lines += [self.line(catalog.SCREENING_LABS[code], [code]) for code in screenings]
        if vaccinated:
            lines += [self.line(code, ["Z23"]) for code in self.vaccine(service_date)]
        return diagnoses, lines[:MAX_LINES]

    def vaccine(self, service_date: date) -> tuple[str, ...]:
        # Flu shots in season, Tdap boosters the rest of the year.
        return (
            catalog.FLU_SHOT
            if service_date.month in (9, 10, 11, 12, 1, 2, 3)
            else catalog.TDAP_SHOT
        )

    def line(
        self, hcpcs_code: str, diagnoses: list[str], modifiers: str | None = None, units: int = 1
    ) -> dict[str, Any]:
        return {
            "hcpcs_code": hcpcs_code,
            "modifiers": modifiers,
            "units": Decimal(units),
            "line_amount": catalog.FEES[hcpcs_code] * units,
            "diagnosis_codes": ",".join(diagnoses),
        }

    def add_encounter(
        self,
        encounter_id: int,
        service_date: date,
        number_in_day: int,
        status: str,
        defect: str | None,
        line_provider: bool,
    ) -> int:
        """Writes one encounter with its diagnoses and charge lines; returns the line count."""
        rng = self.rng
        patient = (
            self.add_patient(member_id_missing=True)
            if defect == MISSING_MEMBER_ID
            else rng.choice(self.patients)
        )
        provider = rng.choice(self.providers)
        if defect == INVALID_NPI:
            # A provider of its own, so that one encounter, not a provider's whole day, is wrong.
            valid = valid_npi(rng)
            provider = self.add_provider(npi=valid[:9] + str((int(valid[9]) + 1) % 10))
        diagnoses: list[str] = []
        lines: list[dict[str, Any]] = []
        if status != "cancelled":
            forced = catalog.RETIRED_ICD10_REPLACES if defect == RETIRED_DIAGNOSIS_CODE else None
            diagnoses, lines = self.visit(patient, service_date, forced)
        facility, place_of_service = provider.facility, None
        venue = rng.random()
        if lines and lines[0]["hcpcs_code"] in _OFFICE_VISITS and venue < 0.08:
            # A video visit: nothing drawn or injected, the visit alone with modifier 95, billed
            # from the virtual clinic or, booked at the office, as telehealth in the home (10).
            lines = [{**lines[0], "modifiers": "95"}]
            if venue < 0.04:
                facility = catalog.TELEHEALTH_FACILITY
            else:
                place_of_service = "10"
        elif venue > 0.95:
            facility = catalog.OUTPATIENT_FACILITY
        created_at = datetime.combine(service_date, time(8)) + timedelta(
            minutes=rng.randrange(9 * 60)
        )
        self.rows.add(
            reference.encounters,
            {
                "id": encounter_id,
                "patient_id": patient.id,
                "provider_id": provider.id,
                "facility_id": facility + 1,
                "service_date": service_date,
                "status": status,
                "visit_number": f"V{service_date:%y%m%d}{number_in_day:04d}",
                "place_of_service": place_of_service,
                "created_at": created_at,
                "updated_at": created_at + timedelta(minutes=rng.randint(20, 600)),
            },
        )
        if defect == RETIRED_DIAGNOSIS_CODE:
            retire = {catalog.RETIRED_ICD10_REPLACES: catalog.RETIRED_ICD10}
            diagnoses = [retire.get(code, code) for code in diagnoses]
            for line in lines:
                line["diagnosis_codes"] = ",".join(
                    retire.get(c, c) for c in line["diagnosis_codes"].split(",")
                )
        if defect == ZERO_UNITS:
            lines[-1]["units"] = Decimal(0)
        if line_provider and len(lines) > 1:
            others = [p for p in self.providers if p.id != provider.id]
            lines[-1]["provider_id"] = rng.choice([p for p in others if p.mid_level] or others).id
        for sequence, code in enumerate(diagnoses, start=1):
            self.rows.add(
                reference.diagnoses,
                {"encounter_id": encounter_id, "sequence": sequence, "icd10_code": code},
            )
        for line_number, line in enumerate(lines, start=1):
            explicit_dates = rng.random() < 0.2
            units = line["units"]
            self.rows.add(
                reference.charges,
                {
                    "id": self._id("charges"),
                    "encounter_id": encounter_id,
                    "line_number": line_number,
                    "provider_id": None,
                    **line,
                    # EHRs often leave a single unit blank; the adapter reads blank as 1.
                    "units": None if units == 1 and rng.random() < 0.15 else units,
                    "service_date_from": service_date if explicit_dates else None,
                    "service_date_to": service_date if explicit_dates else None,
                },
            )
        return len(lines)


def _plan(rng: random.Random, total: int) -> tuple[list[str], dict[int, str], set[int]]:
    """Status of each encounter (by index), the planted defects and the line-provider overrides,
    decided before any encounter is drawn so that their shares are exact."""
    statuses = [
        "finalized"
        if rng.random() < BILLABLE_SHARE
        else rng.choice(("draft", "draft", "cancelled"))
        for _ in range(total)
    ]
    billable = [i for i, status in enumerate(statuses) if status == "finalized"]
    chosen = rng.sample(billable, round(len(billable) * DEFECT_SHARE))
    defects = {index: DEFECTS[n % len(DEFECTS)] for n, index in enumerate(chosen)}
    clean = [i for i in billable if i not in defects]
    overrides = set(rng.sample(clean, round(len(billable) * LINE_PROVIDER_SHARE)))
    return statuses, defects, overrides


def seed_demo(
    url: str, days: int, encounters_per_day: int, today: date | None = None, seed: int = 7
) -> SeedSummary:
    """Create the reference schema at ``url`` and fill it with a synthetic practice:
    ``encounters_per_day`` encounters on each of the ``days`` dates ending yesterday (relative
    to ``today``, default the current date). The same arguments give the same rows.

    Writes in one transaction. Refuses (ConfigurationError), before creating anything, a
    database whose ``encounters`` table already holds rows: a second run, or a URL pointing at
    a mapped practice database, is never added to."""
    if days < 1 or encounters_per_day < 0:
        raise ValueError("seed_demo needs days >= 1 and encounters_per_day >= 0")
    today = today or date.today()
    first_date, last_date = today - timedelta(days=days), today - timedelta(days=1)
    rng = random.Random(seed)
    practice = _Practice(rng, first_date, last_date)
    total = days * encounters_per_day

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            # Checked before any DDL: a URL pointing at a real EHR must not even get tables.
            if _holds_encounters(conn):
                shown = sa.make_url(url).render_as_string(hide_password=True)
                raise ConfigurationError(
                    f"The database {shown} already holds encounters; the demo seeds only an "
                    "empty database (see is_seeded)."
                )
            metadata.create_all(conn)
            practice.add_facilities_and_payers()
            for _ in range(PROVIDER_COUNT):
                practice.providers.append(practice.add_provider())
            for _ in range(max(30, math.ceil(total / ENCOUNTERS_PER_PATIENT))):
                practice.add_patient()
            statuses, defects, overrides = _plan(rng, total)
            charge_lines = billable_charge_lines = 0
            for index in range(total):
                day, number = divmod(index, encounters_per_day)
                lines = practice.add_encounter(
                    index + 1,
                    first_date + timedelta(days=day),
                    number + 1,
                    statuses[index],
                    defects.get(index),
                    index in overrides,
                )
                charge_lines += lines
                if statuses[index] == "finalized":
                    billable_charge_lines += lines
                if practice.rows.size >= _FLUSH_ROWS:
                    practice.rows.flush(conn)
            practice.rows.flush(conn)
    finally:
        engine.dispose()
    return SeedSummary(
        patients=practice.next_id["patients"] - 1,
        providers=practice.next_id["providers"] - 1,
        encounters=total,
        billable_encounters=statuses.count("finalized"),
        charge_lines=charge_lines,
        billable_charge_lines=billable_charge_lines,
        first_service_date=first_date,
        last_service_date=last_date,
        defects={str(index + 1): defect for index, defect in sorted(defects.items())},
    )


def _holds_encounters(conn: sa.Connection) -> bool:
    if not sa.inspect(conn).has_table(reference.encounters.name):
        return False
    return conn.execute(sa.select(reference.encounters.c.id).limit(1)).first() is not None


def is_seeded(url: str) -> bool:
    """Whether the database at ``url`` already holds reference-schema encounters."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return _holds_encounters(conn)
    finally:
        engine.dispose()
