"""The device registry: register devices, bind them to chairs, see what unbound devices sent."""
