"""tswarm: the service that collects readings from a swarm of MicroPython sensor nodes."""
