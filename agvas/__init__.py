"""AG-VAS: anchor-guided zero-shot visual anomaly segmentation with large multimodal models."""

__version__ = "0.1.0"
