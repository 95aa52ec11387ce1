"""S3 storage: streamed multipart transfer against whole-object requests, side by side.

    python bench/s3_transfer.py [--size small|full]      (or LOCARIA_BENCH_SIZE=small|full)

One object goes up and comes back down through S3Storage (boto3's managed transfer: 8 MiB
parts, 4 at a time, never the whole object in memory) and through the reference, boto3's plain
put_object(Body=bytes) / get_object().read() with the object held in memory.  Each side runs in
its own process against a moto S3 server started here (another process, so its memory is not
counted); the figures are wall time and the process's peak resident memory above the same
process's baseline after imports.  moto answers each ranged GET of a multipart download by
reading the object again, so against it the managed transfer's time grows faster than the size;
on S3 itself the parallel parts are the fast path.  The memory column is the point here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

SIZES_MIB = {"small": 48, "full": 512}
BUCKET = "locaria-bench"


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, source: Path) -> None:
    """One side of the comparison; prints {seconds, peak_mib, baseline_mib} as JSON."""
    import boto3

    from locaria_batch.storage.s3 import S3Storage

    client = boto3.client("s3")
    baseline = _peak_mib()
    start = time.perf_counter()
    if mode == "storage":
        storage = S3Storage(BUCKET, "bench", client=client)
        storage.put("incoming/object.bin", source)
        with storage.local_copy("incoming/object.bin") as copy:
            size = copy.stat().st_size
    else:
        client.put_object(Bucket=BUCKET, Key="reference/object.bin", Body=source.read_bytes())
        data = client.get_object(Bucket=BUCKET, Key="reference/object.bin")["Body"].read()
        size = len(data)
        del data
    seconds = time.perf_counter() - start
    if size != source.stat().st_size:
        sys.exit(f"{mode}: got {size} bytes back, sent {source.stat().st_size}")
    print(json.dumps({"seconds": seconds, "peak_mib": _peak_mib(), "baseline_mib": baseline}))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES_MIB), default=os.environ.get("LOCARIA_BENCH_SIZE", "full"),
                        help="object size: small (48 MiB) or full (512 MiB)")
    parser.add_argument("--child", choices=["storage", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.source)
        return

    port = _free_port()
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "eu-west-2",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent / "src"),
                                                       os.environ.get("PYTHONPATH")]))}
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mib = SIZES_MIB[args.size]
    with tempfile.TemporaryDirectory(prefix="locaria-bench-s3-") as folder:
        try:
            for _ in range(100):
                try:
                    requests.get(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
                    break
                except requests.ConnectionError:
                    time.sleep(0.1)
            requests.put(f"http://127.0.0.1:{port}/{BUCKET}", timeout=10).raise_for_status()
            source = Path(folder) / "object.bin"
            with source.open("wb") as out:
                for _ in range(mib):
                    out.write(os.urandom(1 << 20))
            results = {}
            for mode in ("storage", "reference"):
                done = subprocess.run([sys.executable, __file__, "--child", mode, "--source", str(source)], env=env,
                                      capture_output=True, text=True, check=True)
                results[mode] = json.loads(done.stdout)
        finally:
            server.terminate()
            server.wait(10)

    ours, ref = results["storage"], results["reference"]
    ours_mem, ref_mem = ours["peak_mib"] - ours["baseline_mib"], ref["peak_mib"] - ref["baseline_mib"]
    print(f"S3 round trip of a {mib} MiB object (put, then get to a local file / to memory), moto S3 server")
    print(f"  {'':34} {'wall s':>8} {'MiB/s':>8} {'peak RSS above baseline':>24}")
    for label, row, mem in (("S3Storage (managed, multipart)", ours, ours_mem),
                            ("reference: put_object/get_object", ref, ref_mem)):
        print(f"  {label:34} {row['seconds']:8.2f} {2 * mib / row['seconds']:8.1f} {mem:20.0f} MiB")
    print(f"  ratio (S3Storage / reference):     time {ours['seconds'] / ref['seconds']:.2f}x, "
          f"memory {ours_mem / max(ref_mem, 1):.2f}x")


if __name__ == "__main__":
    main()
