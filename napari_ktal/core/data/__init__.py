"""Data in: MRC subtomograms, labels CSVs and the memory-mapped pool."""
