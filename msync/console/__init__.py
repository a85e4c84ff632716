"""
The operator's side of msync: the admin API (L{msync.console.api}, its
one request path in L{msync.console.api_calls}, its actions by concept
in L{msync.console.api_logins}, L{msync.console.api_instances},
L{msync.console.api_configs}, L{msync.console.api_delivery} and
L{msync.console.api_settings}, its request bodies in
L{msync.console.api_bodies} and its JSON shapes in
L{msync.console.api_shapes}), the logins and tokens that guard it
(L{msync.console.sessions}), the browser console built on it
(L{msync.console.pages}), and C{msync admin} (L{msync.console.admin_cli},
L{msync.console.admin_commands}, L{msync.console.admin_client},
L{msync.console.admin_text}).
"""
