"""Network infrastructure shared by connectors and transports: reconnect backoff and the
bounded MQTT client.  Imports only :mod:`isthmus.model` and :mod:`isthmus.observe`."""
