"""imamatch: semi-dense image matching with increased matching amount (IMAMatch)."""
