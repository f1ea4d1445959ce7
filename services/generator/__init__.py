"""The generator worker: takes jobs from the scheduler, renders, encodes, stores, reports."""
