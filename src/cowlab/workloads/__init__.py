"""Programs that drive the model the way real applications drive the kernel."""
