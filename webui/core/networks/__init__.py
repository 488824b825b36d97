"""What a request adds to a loaded model and undoes afterwards: LoRA/LyCORIS, embeddings, hypernetworks, VAE."""
