"""One generation: the engine's recipe, its stages, prompts, conditioning, samplers, noise, image ops."""
