"""The domain: sandboxes, their lifecycle, and the ports to the outside world."""
