"""One service per function: builds its dependencies once per container and handles one event.

The functions' app.py files are thin: Powertools decorators plus one call into the service here.
"""
