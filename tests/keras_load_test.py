"""An extracted model saved as .keras loads in a process that never imports ofav2_tf."""
# bazel: size=large

import os
import subprocess
import sys
import textwrap

import numpy as np
import tensorflow as tf

from ofav2_tf import extraction
from tests import testutil

_LOADER = textwrap.dedent('''
    import sys
    import numpy as np
    import tf_keras
    model = tf_keras.models.load_model(sys.argv[1], safe_mode=True)
    np.save(sys.argv[3], model(np.load(sys.argv[2]), training=False).numpy())
    assert not any(name.startswith('ofav2_tf') for name in sys.modules), 'ofav2_tf was imported'
''')


class KerasLoadTest(tf.test.TestCase):

  def test_fresh_process_loads_with_safe_mode(self):
    net = testutil.perturbed_supernet('EE_DP', num_classes=5, seed=6, width_multiplier=0.5)
    config = net.search_space().max_config(48)
    testutil.calibrate(net, config)
    model = extraction.extract(net, config)
    tmp = self.get_temp_dir()
    path, inputs, outputs = (os.path.join(tmp, n) for n in ('m.keras', 'x.npy', 'y.npy'))
    model.save(path)
    x = testutil.images(2, 48, seed=1).numpy()
    np.save(inputs, x)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    result = subprocess.run([sys.executable, '-c', _LOADER, path, inputs, outputs],
                            cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    self.assertAllEqual(np.load(outputs), model(x, training=False).numpy())


if __name__ == '__main__':
  tf.test.main()
