"""The proxy agent (this mesh's pilot-agent): workload certificates from citadel, served to the proxy over SDS.

Pure logic: csr.py (key + CSR), rotation.py (when to renew, back-off), secrets.py (Secret protos).
I/O: citadel_client.py (CreateCertificate), cert_manager.py (the rotation loop), sds_server.py (SDS on a
Unix socket), app.py (wiring). Process supervision of the proxy is added later next to app.py.
"""
