// The function app's application settings, as one object (name -> value). Applied
// after the app exists so that settings can use its host name. This replaces the
// whole set: every setting the app needs comes from main.bicep.

@description('Name of an existing function app.')
param functionAppName string

@description('Application settings; values are plain strings or Key Vault references, never secrets.')
param appSettings object

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: appSettings
}
