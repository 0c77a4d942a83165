"""Runs fakepve (PyPI) for headroom's Rust tests and lets them drive it.

Started by the tests as `python3 tests/fakepve/harness.py`. Prints one JSON line:
{"url": ..., "ca": <cert file>, "fingerprint": "AB:CD:..", "token": "USER@REALM!ID=SECRET"}
then reads JSON commands, one per line, and answers each with one JSON line:
  {"op": "add_vm", "vmid": 2000, "name": "tmpl", "template": true, "status": "stopped", "config": {...}, "node": "pve1"}
  {"op": "add_node", "name": "pve2"}
  {"op": "fail", "method": "POST", "suffix": "/nodes/pve1/qemu/2000/clone", "error": "...", "times": 1}
  {"op": "fail", "method": "POST", "suffix": "...", "status": 595, "message": "...", "times": 1}
  {"op": "errors_for", "method": "POST", "path": "/nodes/pve1/qemu/2000/clone"}
  {"op": "lock", "vmid": 207, "lock": "backup"} / {"op": "unlock", "vmid": 207}
  {"op": "slow_network", "latency": 0.5}
  {"op": "revoke_token"}
  {"op": "time_scale", "value": 0.01}
  {"op": "vms"}       -> [{vmid, name, node, status, template, lock, config}]
  {"op": "requests"}  -> [[method, path, body], ...]
"""
import asyncio
import hashlib
import json
import ssl
import sys
import tempfile

from fakepve import FakePve
from fakepve.certs import make_cert

TOKEN_ID = 'headroom@pve!provisioner'
TOKEN_SECRET = '5f0c1e7a-9b2d-4c8e-a1f3-6d7e8f9a0b1c'


def fingerprint(certfile):
    der = ssl.PEM_cert_to_DER_cert(open(certfile).read())
    digest = hashlib.sha256(der).hexdigest().upper()
    return ':'.join(digest[i:i + 2] for i in range(0, len(digest), 2))


def describe(vm):
    return {'vmid': vm.vmid, 'name': vm.name, 'node': vm.node, 'status': vm.status,
            'template': bool(getattr(vm, 'template', False)), 'lock': getattr(vm, 'lock', None),
            'config': {k: v for k, v in vm.config.items() if isinstance(v, (str, int, float))}}


async def main():
    tmp = tempfile.mkdtemp(prefix='headroom-fakepve-')
    pve = FakePve(user='root@pam', password='secret', host='127.0.0.1', port=0)
    pve.apitokens[TOKEN_ID] = TOKEN_SECRET
    certfile, keyfile, _ = make_cert(tmp, hosts=('127.0.0.1', 'localhost'))
    await pve.start(certfile, keyfile)
    print(json.dumps({'url': pve.url, 'ca': certfile, 'fingerprint': fingerprint(certfile),
                      'token': '{0}={1}'.format(TOKEN_ID, TOKEN_SECRET)}), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        cmd = json.loads(line)
        op = cmd.pop('op')
        try:
            if op == 'add_vm':
                vm = pve.add_vm(cmd['vmid'], cmd['name'], node=cmd.get('node', 'pve1'), status=cmd.get('status', 'stopped'),
                                config=cmd.get('config', {}), template=cmd.get('template', False),
                                lock=cmd.get('lock'))
                for key in ('start_secs', 'shutdown_secs'):
                    if key in cmd:
                        setattr(vm, key, cmd[key])
                out = describe(vm)
            elif op == 'add_node':
                pve.add_node(cmd['name'])
                out = True
            elif op == 'fail':
                pve.fail(cmd['method'], cmd['suffix'], status=cmd.get('status'), message=cmd.get('message'),
                         error=cmd.get('error'), times=cmd.get('times'))
                out = True
            elif op == 'errors_for':
                out = [e['name'] for e in pve.errors_for(cmd['method'], cmd['path'])]
            elif op == 'lock':
                pve.vm(cmd['vmid']).lock = cmd['lock']
                out = True
            elif op == 'unlock':
                pve.unlock(cmd['vmid'])
                out = True
            elif op == 'slow_network':
                pve.slow_network(cmd['latency'])
                out = True
            elif op == 'revoke_token':
                pve.apitokens.clear()
                out = True
            elif op == 'time_scale':
                pve.time_scale = cmd['value']
                out = True
            elif op == 'vms':
                out = [describe(vm) for vm in pve.vms]
            elif op == 'requests':
                out = [[m, p, b.decode('utf-8', 'replace') if isinstance(b, bytes) else b] for (m, p, b) in
                       [tuple(r[:3]) for r in pve.requests]]
            else:
                out = {'error': 'unknown op ' + op}
        except Exception as e:  # report to the test rather than die
            out = {'error': '{0}: {1}'.format(type(e).__name__, e)}
        print(json.dumps(out, default=str), flush=True)
    await pve.stop()


asyncio.run(main())
