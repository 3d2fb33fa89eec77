"""What a clinic's IT person watches: structured logs with request ids (metrics come later)."""
