"""How homedash's own tooling starts Chromium (browser tests, benchmarks, the README's
screenshots): headless, and unable to reach anything but this machine.

Chromium looks up Google's names by itself (account sign-in, autofill, component and safe
browsing updates, network time, search preconnects): the background-networking switches stop
most of it, and the resolver rule stops the rest, since a name that does not resolve cannot be
contacted. Only loopback resolves; addresses typed as numbers need no lookup. One list here,
imported by tests/browser.py, bench/ and docs/make_screenshots.py.
"""

from __future__ import annotations

# Names Chromium may still look up: the pages under test are on 127.0.0.1 or localhost.
# (Chromium's own syntax: comma-separated rules, no quotes once past a shell.)
HOST_RESOLVER_RULES = "MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"

# Chromium reads only the last --disable-features switch, and Playwright passes its own before
# ours: this list repeats Playwright's (1.65) so none of those is lost, then adds the features
# that talk to Google's servers.
DISABLED_FEATURES = [
    # Playwright's
    "AvoidUnnecessaryBeforeUnloadCheckSync", "DestroyProfileOnBrowserClose", "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable", "LensOverlay", "MediaRouter", "PaintHolding",
    "ThirdPartyStoragePartitioning", "AvoidCorsURLLoaderRestartOnRedirect", "OptimizationHints",
    "NetworkTimeServiceQuerying", "AimEnabled", "PreconnectToSearch",
    # ours: features that fetch or report to outside servers
    "AutofillServerCommunication", "CertificateTransparencyComponentUpdater", "DialMediaRouteProvider",
    "Translate", "InterestFeedContentSuggestions",
]

CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    f"--host-resolver-rules={HOST_RESOLVER_RULES}",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--no-first-run", "--no-default-browser-check", "--disable-quic",
    "--disable-client-side-phishing-detection", "--disable-domain-reliability", "--no-pings",
    "--disable-breakpad", "--metrics-recording-only", "--safebrowsing-disable-auto-update",
    "--dns-prefetch-disable",
    "--disable-features=" + ",".join(DISABLED_FEATURES),
]
