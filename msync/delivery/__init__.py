"""
Delivery: which device gets which op (L{msync.delivery.engine}), the
filters kept with each op (L{msync.delivery.ops}), and server-side
sending (L{msync.delivery.sender}).
"""
