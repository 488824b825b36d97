"""Textual-inversion and hypernetwork training (A1111 ``modules/textual_inversion`` and ``modules/hypernetworks``).

Creating an embedding or a hypernetwork writes an A1111-format ``.pt``; training runs as one job on the queue's
worker, on the loaded model, whose own weights are never changed (only the embedding's vectors or the hypernetwork's
layers get gradients). Modules: ``args`` (A1111's argument names, defaults and input checks), ``schedule`` (learning
rate schedules), ``dataset`` (images -> latents and captions), ``image_embedding`` (embeddings stored in preview
PNGs), ``common`` (the diffusion loss, the frozen-model scope, previews, the loss CSV), ``textual_inversion`` and
``hypernetwork`` (create, save, train). Nothing happens at import time.
"""
