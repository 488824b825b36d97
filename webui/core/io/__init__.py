"""Files in and out: image metadata (PNG text, EXIF), infotext, atomic writes."""
