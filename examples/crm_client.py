"""A CRM calling the flowctl CLI directly (no server needed) and storing the token it returns.

    python3 examples/crm_client.py +212610059159 Ahmed
"""
import json
import subprocess
import sys


def send_flow(phone: str, name: str) -> dict:
    """Runs `flowctl send`; stdout is always one JSON object, the exit code says how it went."""
    proc = subprocess.run(
        ["flowctl", "send", phone, "--name", name],
        capture_output=True,
        text=True,
    )
    if proc.returncode == 2:
        raise ValueError(proc.stderr.strip())  # bad number or missing configuration
    outcome = json.loads(proc.stdout)
    if not outcome["success"] and outcome["error"]["retryable"]:
        print("temporary failure, try again later:", outcome["error"]["message"], file=sys.stderr)
    return outcome


if __name__ == "__main__":
    print(json.dumps(send_flow(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ""), indent=2))
