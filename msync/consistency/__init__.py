"""
User consistency: calling tenants' validation endpoints
(L{msync.consistency.validator}) and the reference tenant app
(L{msync.consistency.reference}).
"""
