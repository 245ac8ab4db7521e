"""A deployed app with a schedule (tests/test_dashboard.py): its next run is on the dashboard."""

import ember

app = ember.App("nightly")


@app.function(schedule=ember.Cron("30 2 * * *"))
def nightly():
    print("nightly ran", flush=True)
