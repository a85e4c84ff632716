"""
The operator's side of msync: the admin API (L{msync.console.api}), the
logins and tokens that guard it (L{msync.console.sessions}), the browser
console built on it, and C{msync admin} (L{msync.console.admin_cli}).
"""
