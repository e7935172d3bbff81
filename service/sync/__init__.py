"""Sync to external EHRs: outbox, delivery engine, workers, inbound pull."""
