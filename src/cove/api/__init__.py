"""HTTP, WebSocket and Socket.IO transport. Thin: the domain lives in cove.core."""
