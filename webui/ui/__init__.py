"""The Gradio web UI: A1111's tabs over the shared AppState (queue, engine, settings). ``blocks.build_ui(state)`` builds
it; ``webui.app`` mounts it. Nothing here generates: each tab builds a GenerationRequest and submits it to the queue."""
