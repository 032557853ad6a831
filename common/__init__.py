"""What the hospital side and the server side share: the run's settings and the message-record
helpers. It imports neither side, so no import runs up a layer."""
