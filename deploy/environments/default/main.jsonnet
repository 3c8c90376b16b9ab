// The default environment: the whole stack with the library's defaults.
(import 'mop.libsonnet')
