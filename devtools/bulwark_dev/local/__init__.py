"""Local emulation of the deployed stack: DynamoDB Local, Lambda workers, an API Gateway emulator.

Only the transport is emulated: routes, the authorizer, handlers, environment and tables all come from ``template.yaml``
(see :mod:`bulwark_dev.local.template_model`), and the handlers run unchanged in their own processes.
"""
