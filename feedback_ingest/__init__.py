"""Feedback ingestion: validated corrections into a versioned dataset that retraining reads (issue 4)."""
