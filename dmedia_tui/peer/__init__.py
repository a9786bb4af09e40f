"""Peers: copies travel between the machines of one library over mutual TLS.

identity (this machine's key pair and certificate), server (read-only HTTPS for the
library's machines), client (pulls with every leaf verified, resumable), discovery
(mDNS on a LAN). See DESIGN.md §6.
"""
