from datetime import date, datetime

from claims_pipeline.sources.base import to_record_batch


def test_driver_values_are_coerced_and_unreadable_dates_count_as_unknown():
    batch = to_record_batch(
        [
            {
                "service_date": datetime(2026, 11, 20, 9, 30),
                "encounter_id": 17,
                "claim_submitter_identifier": "17-4",
                "patient_dob": "04/12/1985",  # text a custom query may return: never guessed
                "line_service_date_from": "0000-00-00",
                "line_service_date_to": "2026-11-20",
                "line_number": 1,
            }
        ]
    ).to_pylist()[0]
    assert batch["service_date"] == date(2026, 11, 20)
    assert batch["encounter_id"] == "17"
    assert batch["patient_dob"] is None
    assert batch["line_service_date_from"] is None
    assert batch["line_service_date_to"] == date(2026, 11, 20)


def test_typed_rows_and_raw_driver_rows_store_the_same_values():
    from decimal import Decimal

    typed = {
        "service_date": date(2026, 11, 20),
        "encounter_id": "17",
        "claim_submitter_identifier": "17-4",
        "units": "2",
        "line_amount": "150.00",
        "line_number": 1,
    }
    raw = typed | {"encounter_id": 17, "units": Decimal("2"), "line_amount": Decimal("150.00")}
    assert to_record_batch([typed]).to_pylist() == to_record_batch([raw]).to_pylist()
