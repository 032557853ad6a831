"""A regression federation: length of hospital stay (days) from admission data, 3 hospitals."""
