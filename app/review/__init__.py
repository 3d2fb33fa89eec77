"""Session review: lists, summary figures, trace, alarm log, reports and annotations (issue 8)."""
