"""The guest owner's side of AMD SEV: launch digests, measurements, secret packets.

Everything here is a pure function over bytes, except the simulated secure element,
which stands in for the PSP on hosts without SEV.
"""
