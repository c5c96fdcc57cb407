"""Running models: devices, inference, training, several processes."""
