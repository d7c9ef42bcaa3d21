"""The feedstock layer's tooling: delegation sources, publishing, CI signing, verifying.

The formats and the checks themselves live in the trust core (`signer.trust.feedstocks`,
`signer.trust.attestation`); this package reads and writes files around them.
"""
