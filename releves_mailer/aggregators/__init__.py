"""The aggregators: one package each, behind the Provider and PartnerMode contracts.

Each package (``powens/``, ``testbank/``) holds its client, its
:class:`~releves_mailer.collect.provider.Provider`, its
:class:`~releves_mailer.partner.modes.PartnerMode` and its HTTP routes, and exposes one
:class:`~releves_mailer.aggregators.contract.Aggregator` listed in
:mod:`releves_mailer.aggregators.registry`, through which the daemon and the commands open
them all the same way.
"""
