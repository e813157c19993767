"""The pure balancing core: plain data in, an allocation plan out. No I/O, no Kubernetes."""
