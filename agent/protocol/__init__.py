"""The wire protocol peers speak over the message bus: topic names, signed messages, replay protection."""
