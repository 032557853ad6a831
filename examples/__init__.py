"""Examples shipped inside the app bundle, so a run can name their models by import path."""
