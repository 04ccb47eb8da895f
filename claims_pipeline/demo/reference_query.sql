-- The demo's `sql`-adapter practice: the portable example of docs/sources.md, over the
-- reference schema (SQLite/PostgreSQL spelling of ||).
SELECT e.service_date AS service_date, e.id AS encounter_id,
       'REF-' || e.id AS claim_submitter_identifier, e.visit_number AS visit_number,
       p.first_name || ' ' || p.last_name AS patient_name, p.date_of_birth AS patient_dob,
       p.sex AS patient_gender, cv.member_id AS patient_member_id, py.name AS payer_name,
       py.phone AS payer_phone, COALESCE(e.place_of_service, f.place_of_service) AS place_of_service,
       NULL AS claim_diagnosis_codes,
       COALESCE(lp.first_name || ' ' || lp.last_name, pr.first_name || ' ' || pr.last_name) AS provider_name,
       COALESCE(lp.npi, pr.npi) AS provider_npi, f.street AS provider_street, f.city AS provider_city,
       f.state AS provider_state, f.postal_code AS provider_postal_code,
       c.line_number AS line_number, c.hcpcs_code AS hcpcs_code, c.modifiers AS modifiers,
       c.units AS units, c.line_amount AS line_amount,
       c.service_date_from AS line_service_date_from, c.service_date_to AS line_service_date_to,
       c.diagnosis_codes AS line_diagnosis_codes
FROM encounters e
JOIN patients p ON p.id = e.patient_id
JOIN providers pr ON pr.id = e.provider_id
JOIN facilities f ON f.id = e.facility_id
LEFT JOIN coverages cv ON cv.id = (
    SELECT MAX(c2.id) FROM coverages c2
    WHERE c2.patient_id = e.patient_id AND c2.priority = 'primary'
      AND c2.effective_from <= e.service_date
      AND (c2.effective_to IS NULL OR c2.effective_to >= e.service_date))
LEFT JOIN payers py ON py.id = cv.payer_id
LEFT JOIN charges c ON c.encounter_id = e.id
LEFT JOIN providers lp ON lp.id = c.provider_id
WHERE e.status = 'finalized'
  AND e.service_date >= :window_start AND e.service_date < :window_end
ORDER BY e.service_date, e.id, c.line_number;
