"""After generation: upscalers, face restoration, the Extras tab's work."""
