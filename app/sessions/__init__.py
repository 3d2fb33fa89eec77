"""Sessions: check a patient into a chair, record what happens, discharge."""
