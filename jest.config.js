/** LibTorch suites run in band (see package.json "test"): one native library per process, and a crash in a
 * child process is reported by the fuzz test instead of killing jest. */
module.exports = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testTimeout: 120000,
  transform: { '^.+\\.ts$': 'ts-jest' },
};
