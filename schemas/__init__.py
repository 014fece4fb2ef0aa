"""Data contracts shared by every job: the model card, output tables and message formats."""
