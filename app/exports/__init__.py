"""Export towards the hospital: a session's observations as HL7 v2 ORU^R01 and FHIR R4."""
