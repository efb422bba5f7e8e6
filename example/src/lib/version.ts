import pkg from '../../package.json'

/** APP_VERSION (set by the deploy) wins; otherwise the version in package.json. */
export function appVersion(): string {
  return process.env.APP_VERSION || pkg.version
}
