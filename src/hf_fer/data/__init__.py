"""Data: the embedded synthetic faces, benchmark readers (raw layouts -> ``datasets``), transforms and samplers."""
